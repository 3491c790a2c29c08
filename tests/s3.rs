//! S3 through the real aws-sdk-s3 client, against moto's S3 in server mode on 127.0.0.1 (with a
//! fault-injecting middleware in front of it): the Sparkify ETL S3 to S3 equals the local run,
//! transient faults are retried away, a killed run leaves the published tables readable, and
//! missing buckets, denied access and missing prefixes are clear errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::json;

use crate::support::*;

/// The tables of a local run of the real sample, rows sorted: the reference S3 runs must equal.
fn local_reference(dir: &Path) -> Vec<Vec<Row>> {
    let out = dir.join("local");
    run_sparkify(&sample(), &out, &["-q"]).expect(0);
    TABLES.iter().map(|t| sorted_rows(&out.join(t))).collect()
}

/// The published tables under `s3://lake/star`, read the way the convention says.
fn s3_tables(moto: &Moto, dir: &Path) -> Vec<Vec<Row>> {
    TABLES
        .iter()
        .map(|t| {
            let local = dir.join(t);
            moto.download_table("lake", &format!("star/{t}"), &local);
            sorted_rows(&local)
        })
        .collect()
}

fn run_s3(moto: &Moto, extra: &[&str]) -> Run {
    let pipeline = sparkify();
    let mut args =
        vec![pipeline.to_str().unwrap(), "--set", "input=s3://udacity-dend/sample", "--set", "output=s3://lake/star"];
    args.extend_from_slice(extra);
    Run::from(moto.dagrun().args(&args).output().unwrap())
}

fn setup() -> (Moto, tempfile::TempDir) {
    let moto = Moto::start();
    moto.upload(&sample(), "udacity-dend", "sample");
    moto.control("bucket", json!({"bucket": "lake"}));
    (moto, tempfile::tempdir().unwrap())
}

#[test]
fn s3_to_s3_gives_the_same_tables_as_the_local_run() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let reference = local_reference(tmp.path());
    let run = run_s3(&moto, &["-q"]).expect(0);
    assert!(run.stdout.contains("all 18 tasks succeeded"), "{}", run.stdout);
    assert_eq!(s3_tables(&moto, &tmp.path().join("first")), reference);

    // Unchanged inputs: nothing to do.
    let again = run_s3(&moto, &["-q"]).expect(0);
    assert!(again.stdout.contains("all 18 tasks up to date"), "{}", again.stdout);
    // A forced re-run replaces each table in one new Delta version: readers see it alone.
    run_s3(&moto, &["-q", "--force"]).expect(0);
    assert!(moto.keys("lake", "star/users").contains(&"star/users/_delta_log/00000000000000000001.json".to_string()));
    assert_eq!(s3_tables(&moto, &tmp.path().join("second")), reference);

    // The run record lives beside the outputs on S3, and the report reads the tables from there.
    let page = tmp.path().join("report.html");
    Run::from(
        moto.dagrun().args(["report", "s3://lake/star/_dagrun", "--output", page.to_str().unwrap()]).output().unwrap(),
    )
    .expect(0);
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("Setanta matins (Elena)") && html.contains("Free vs paid"), "answers from the S3 tables");
}

#[test]
fn slices_on_s3_list_only_their_days_and_add_up_to_the_full_run() {
    if !runtimes(&[Runtime::Moto, Runtime::DeltaLake]) {
        return;
    }
    let (moto, tmp) = setup();
    let reference = local_reference(tmp.path());
    // One day, then a backfill of the month out of order: the days already published are skipped,
    // and the days just before and after the month, with no file of their own, are settled too.
    let one = run_s3(&moto, &["-q", "--partition", "2018-11-21"]).expect(0);
    assert!(one.stdout.contains("running 1 (2018-11-21)"), "{}", one.stdout);
    let month = run_s3(&moto, &["-q", "--since", "2018-11-01", "--until", "2018-11-30"]).expect(0);
    assert!(
        month.stdout.contains("(30 days); running 31 (2018-10-31..2018-11-20, 2018-11-22..2018-12-01)"),
        "{}",
        month.stdout
    );
    assert_eq!(s3_tables(&moto, &tmp.path().join("sliced")), reference);
    let again = run_s3(&moto, &["-q"]).expect(0);
    assert!(again.stdout.contains("nothing to run"), "{}", again.stdout);
}

#[test]
fn transient_failures_are_retried_and_the_output_is_identical() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let reference = local_reference(tmp.path());
    moto.faults(json!([
        {"kind": "slowdown", "method": "GET", "every": 4},
        {"kind": "reset", "every": 9},
        {"kind": "error500", "method": "PUT", "every": 5},
        {"kind": "delay", "seconds": 1.0, "every": 25}
    ]));
    let run = run_s3(&moto, &["-q"]).expect(0);
    let stats = moto.stats();
    for kind in ["slowdown", "reset", "error500", "delay"] {
        assert!(stats["injected"][kind].as_u64().unwrap_or(0) > 0, "no {kind} fault was injected: {stats}");
    }
    assert!(run.stdout.contains("all 18 tasks succeeded"), "{}", run.stdout);
    moto.faults(json!([]));
    assert_eq!(s3_tables(&moto, tmp.path()), reference);
}

#[test]
fn a_run_killed_during_load_leaves_the_published_tables_readable() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let reference = local_reference(tmp.path());
    // The Parquet convention's manifests and leftovers (the Delta case is in tests/delta.rs).
    let parquet = ["--set", "format=parquet"];
    run_s3(&moto, &["-q", parquet[0], parquet[1]]).expect(0);
    let manifests_before: Vec<Vec<String>> = TABLES
        .iter()
        .map(|t| moto.download_table("lake", &format!("star/{t}"), &tmp.path().join("m").join(t)))
        .collect();

    // Make every upload of table data slow, then kill the run while it loads.
    moto.faults(json!([{"kind": "delay", "method": "PUT", "match": ".parquet", "seconds": 0.5}]));
    let mut child = moto
        .dagrun()
        .args([
            sparkify().to_str().unwrap(),
            "--set",
            "input=s3://udacity-dend/sample",
            "--set",
            "output=s3://lake/star",
            "--force",
            parquet[0],
            parquet[1],
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the run ended before loading: {seen}");
        seen.push_str(&line);
        if line.contains("load_") && line.contains("writing") {
            break;
        }
    }
    // Kill it once the first file of its new table has landed, while the others are in flight.
    let before: std::collections::BTreeSet<String> = moto.keys("lake", "star").into_iter().collect();
    let start = std::time::Instant::now();
    while !moto.keys("lake", "star").iter().any(|k| k.ends_with(".parquet") && !before.contains(k)) {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "no file of the new run landed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    moto.faults(json!([]));

    // Each table is wholly the previous one or wholly the new one (the same rows, as the input is
    // the same): its manifest names only files that are all there. The kill came mid-load, so at
    // least one table is still the previous one.
    let mut unchanged = 0;
    let mut named = 0;
    for (t, before) in TABLES.iter().zip(&manifests_before) {
        let after = moto.download_table("lake", &format!("star/{t}"), &tmp.path().join("after").join(t));
        unchanged += usize::from(&after == before);
        named += after.len();
    }
    assert!(unchanged > 0, "every load had finished: the kill came too late to test anything");
    let after: Vec<Vec<Row>> = TABLES.iter().map(|t| sorted_rows(&tmp.path().join("after").join(t))).collect();
    assert_eq!(after, reference);
    // The next run removes the killed run's leftovers before it starts.
    let all: usize = TABLES.iter().map(|t| moto.keys("lake", &format!("star/{t}")).len()).sum();
    let left = all - named - 3 * TABLES.len();
    let next = run_s3(&moto, &parquet).expect(0);
    assert_eq!(left > 0, next.stderr.contains("unfinished run"), "{left} files left: {}", next.stderr);
    let keys = moto.keys("lake", "star/songs");
    let manifest = moto.download_table("lake", "star/songs", &tmp.path().join("final"));
    assert_eq!(
        keys.len(),
        manifest.len() + 3,
        "only the manifest's files, _manifest.json, _SUCCESS and dagrun's marker remain: {keys:#?}"
    );
}

#[test]
fn missing_buckets_denied_access_and_missing_prefixes_fail_clearly() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, _tmp) = setup();
    let pipeline = sparkify();
    let run_with = |input: &str, output: &str| {
        let (i, o) = (format!("input={input}"), format!("output={output}"));
        Run::from(
            moto.dagrun()
                .args([pipeline.to_str().unwrap(), "--set", &i, "--set", &o, "-q", "--only", "load_songs"])
                .output()
                .unwrap(),
        )
    };

    let run = run_with("s3://no-such-bucket/sample", "s3://lake/star").expect(1);
    assert!(
        run.stdout.contains("listing s3://no-such-bucket/sample/song_data: bucket `no-such-bucket` does not exist"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("tried"), "a missing bucket is not retried: {}", run.stdout);

    let run = run_with("s3://udacity-dend/elsewhere", "s3://lake/star").expect(1);
    assert!(
        run.stdout.contains("listing s3://udacity-dend/elsewhere/song_data: no objects under this prefix"),
        "{}",
        run.stdout
    );

    // The lake's bucket is where the run's lease goes: a missing one stops the run before any work.
    let run = run_with("s3://udacity-dend/sample", "s3://no-lake/star").expect(1);
    assert!(
        run.stderr.contains("error: taking the lease on the lake: creating s3://no-lake/star/_dagrun/lease.json: bucket `no-lake` does not exist"),
        "{}",
        run.stderr
    );

    moto.faults(json!([{"kind": "denied", "bucket": "udacity-dend"}]));
    let run = run_with("s3://udacity-dend/sample", "s3://lake/star").expect(1);
    assert!(
        run.stdout.contains("access denied by http://127.0.0.1")
            && run.stdout.contains("may not read bucket `udacity-dend`"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_kms_key_that_refuses_the_credentials_is_named_not_the_bucket() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let text = std::fs::read_to_string(sparkify()).unwrap().replace(
        "defaults:\n",
        "storage:\n  s3:\n    server_side_encryption: aws:kms\n    kms_key_id: alias/lake\n\ndefaults:\n",
    );
    let p = pipeline(tmp.path(), "sparkify-kms.yaml", &text);
    let run_kms = || {
        Run::from(
            moto.dagrun()
                .args([
                    p.to_str().unwrap(),
                    "--set",
                    "input=s3://udacity-dend/sample",
                    "--set",
                    "output=s3://lake/star",
                ])
                .args(["-q", "--only", "load_songs"])
                .output()
                .unwrap(),
        )
    };
    // S3 names the key it could not use: so does dagrun, with what SSE-KMS needs.
    moto.faults(json!([{"kind": "kms_denied", "method": "PUT", "bucket": "lake"}]));
    let run = run_kms().expect(1);
    assert!(
        run.stderr.contains("KMS key `arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab` refused these credentials")
            && run.stderr.contains("SSE-KMS needs kms:GenerateDataKey and kms:Decrypt on the key"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("may not write to bucket"), "{}", run.stderr);
    // A bare "Access Denied" on a KMS-encrypted write names the configured key as a cause too.
    moto.faults(json!([{"kind": "denied", "method": "PUT", "bucket": "lake"}]));
    let run = run_kms().expect(1);
    assert!(
        run.stderr.contains("may not write to bucket `lake`, or may not use KMS key `alias/lake`"),
        "{}",
        run.stderr
    );
    moto.faults(json!([]));
}

#[test]
fn validate_env_checks_every_bucket_without_listing_others() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, _tmp) = setup();
    let pipeline = sparkify();
    let ok = Run::from(
        moto.dagrun()
            .args([
                "validate",
                "--env",
                pipeline.to_str().unwrap(),
                "--set",
                "input=s3://udacity-dend/sample",
                "--set",
                "output=s3://lake/star",
            ])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(ok.stdout.contains("ok   read  s3://udacity-dend/sample/song_data"), "{}", ok.stdout);
    assert!(
        ok.stdout
            .contains("ok   write s3://lake (load_songs, load_artists, load_users, load_time, load_songplays, runs)"),
        "{}",
        ok.stdout
    );
    let bad = Run::from(
        moto.dagrun()
            .args([
                "validate",
                "--env",
                pipeline.to_str().unwrap(),
                "--set",
                "input=s3://udacity-dend/nothing",
                "--set",
                "output=s3://gone/star",
            ])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        bad.stdout
            .contains("FAIL read  s3://udacity-dend/nothing/song_data (staging_songs): no objects under this prefix"),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("FAIL write s3://gone (load_songs"), "{}", bad.stdout);
    assert!(bad.stdout.contains("bucket `gone` does not exist"), "{}", bad.stdout);
}

#[test]
fn the_endpoint_can_come_from_the_pipeline_and_credentials_are_never_printed() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let text = std::fs::read_to_string(sparkify())
        .unwrap()
        .replace("defaults:\n", &format!("storage:\n  s3:\n    endpoint_url: {}\n    max_concurrency: 4\n    storage_class: STANDARD_IA\n    server_side_encryption: AES256\n\ndefaults:\n", moto.endpoint()));
    let p = pipeline(tmp.path(), "sparkify-s3.yaml", &text);
    let mut cmd = moto.dagrun();
    cmd.env_remove("AWS_ENDPOINT_URL").args([
        p.to_str().unwrap(),
        "-vv",
        "--log-format",
        "json",
        "--set",
        "input=s3://udacity-dend/sample",
        "--set",
        "output=s3://lake/star",
    ]);
    let run = Run::from(cmd.output().unwrap()).expect(0);
    for secret in ["dagrun-test-secret-never-printed", "dagrun-test-key-id"] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret), "{secret} was printed");
    }
    let dry = Run::from(moto.dagrun().args([p.to_str().unwrap(), "--dry-run"]).output().unwrap()).expect(0);
    assert!(!dry.stdout.contains("dagrun-test-secret-never-printed"));
}

#[test]
fn listings_page_and_large_files_go_up_in_parts_with_the_configured_class_and_encryption() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    // More than 1,000 song objects: S3 answers a listing 1,000 keys at a time.
    let generated = tmp.path().join("gen");
    run(&["generate", "--out", generated.to_str().unwrap(), "--songs", "1100", "--events", "50"]).expect(0);
    moto.upload(&generated, "raw", "gen");
    // A file that becomes a table larger than the multipart threshold: random text does not compress.
    let blobs = tmp.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut text = String::new();
    for i in 0..40_000 {
        let mut blob = String::with_capacity(160);
        for _ in 0..10 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            blob.push_str(&format!("{state:016x}"));
        }
        text.push_str(&format!("{{\"id\": {i}, \"blob\": \"{blob}\"}}\n"));
    }
    std::fs::write(blobs.join("blobs.json"), text).unwrap();
    moto.upload(&blobs, "raw", "blobs");
    let p = pipeline(
        tmp.path(),
        "big.yaml",
        r#"name: big
vars: {output: s3://lake/big}
storage:
  s3:
    multipart_threshold: 5MiB
    part_size: 5MiB
    storage_class: STANDARD_IA
    server_side_encryption: AES256
tasks:
  - id: songs
    kind: extract
    path: s3://raw/gen/song_data
    glob: "**/*.json"
    format: json
    schema: {song_id: string, title: string}
  - id: blobs
    kind: extract
    path: s3://raw/blobs
    format: jsonl
    schema: {id: int, blob: string}
  - id: load_songs
    kind: load
    depends_on: [songs]
    table: songs
    path: ${output}/songs
  - id: load_blobs
    kind: load
    depends_on: [blobs]
    table: blobs
    path: ${output}/blobs
    compression: none
"#,
    );
    let run = Run::from(moto.dagrun().args([p.to_str().unwrap(), "-q"]).output().unwrap()).expect(0);
    assert!(run.stdout.contains("1,100"), "every song object was listed and read: {}", run.stdout);
    let checked = Run::from(moto.dagrun().args(["validate", p.to_str().unwrap()]).output().unwrap()).expect(0);
    let all = format!("{}{}", checked.stdout, checked.stderr);
    assert!(
        all.contains("storage_class STANDARD_IA bills each object as at least 128 KB for at least 30 days"),
        "{all}"
    );
    let stats = moto.stats();
    assert!(stats["queries"]["partNumber"].as_u64().unwrap_or(0) >= 2, "uploaded in parts: {stats}");
    let key = moto.keys("lake", "big/blobs").into_iter().find(|k| k.ends_with(".parquet")).unwrap();
    let head = moto.control("head", json!({"bucket": "lake", "key": key}));
    assert!(head["size"].as_u64().unwrap() > 5 << 20, "{head}");
    assert_eq!(head["storage_class"], "STANDARD_IA");
    assert_eq!(head["encryption"], "AES256");
    assert_eq!(head["content_type"], "application/vnd.apache.parquet");
    // dagrun's own small objects stay in STANDARD: no 128 KB minimum, read back at once.
    let manifest = moto.control("head", json!({"bucket": "lake", "key": "big/blobs/_manifest.json"}));
    assert_eq!(manifest["storage_class"], "STANDARD", "{manifest}");
    let rows = {
        moto.download_table("lake", "big/blobs", &tmp.path().join("down"));
        read_table(&tmp.path().join("down")).len()
    };
    assert_eq!(rows, 40_000);

    // Uploads a killed run left under the tables it loads are aborted when the next run starts;
    // one under a prefix that is not dagrun's is not touched.
    moto.control("begin_upload", json!({"bucket": "lake", "key": "big/songs/part-killed.parquet"}));
    moto.control("begin_upload", json!({"bucket": "lake", "key": "elsewhere/upload.bin"}));
    // A multipart upload that cannot be completed is aborted: its parts are not left billed.
    moto.faults(json!([{"kind": "error500", "method": "POST", "match": "big/blobs", "query": "uploadId="}]));
    let failed = Run::from(moto.dagrun().args([p.to_str().unwrap(), "-q", "--force"]).output().unwrap()).expect(1);
    assert!(failed.stdout.contains("load_blobs"), "{}", failed.stdout);
    let stats = moto.stats();
    assert!(stats["injected"]["error500"].as_u64().unwrap_or(0) > 0, "no completion was refused: {stats}");
    moto.faults(json!([]));
    let uploads = moto.control("uploads", json!({"bucket": "lake"}));
    assert_eq!(uploads["keys"], json!(["elsewhere/upload.bin"]), "uploads left behind: {uploads}");
}

#[test]
fn a_load_over_its_own_input_on_s3_is_refused_before_anything_is_written() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, _tmp) = setup();
    moto.upload(&sample(), "lake", "star/songs");
    let pipeline = sparkify();
    for cmd in ["validate", "run"] {
        let run = Run::from(
            moto.dagrun()
                .args([
                    cmd,
                    pipeline.to_str().unwrap(),
                    "--set",
                    "input=s3://lake/star/songs",
                    "--set",
                    "output=s3://lake/star",
                ])
                .output()
                .unwrap(),
        )
        .expect(2);
        assert!(
            run.stderr.contains(
                "error: load `load_songs` writes s3://lake/star/songs, which contains the input of extract `staging_songs` (s3://lake/star/songs/song_data)"
            ),
            "{}",
            run.stderr
        );
    }
    assert_eq!(moto.keys("lake", "star/songs").len(), 102, "every input object is still there");
    assert!(moto.keys("lake", "star/_dagrun").is_empty(), "nothing was written");
}

#[test]
fn a_prefix_of_objects_dagrun_did_not_publish_is_never_replaced_on_s3() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(mine.join("2018")).unwrap();
    std::fs::write(mine.join("2018/export.csv"), "a,b\n1,2\n").unwrap();
    moto.upload(&mine, "lake", "star/songs");
    let run = run_s3(&moto, &["-q"]).expect(1);
    assert_eq!(state(&run.stdout, "load_songs"), "failed");
    assert!(run.stdout.contains("refusing to replace s3://lake/star/songs"), "{}", run.stdout);
    assert_eq!(moto.keys("lake", "star/songs"), vec!["star/songs/2018/export.csv"]);
    assert_eq!(state(&run.stdout, "load_users"), "succeeded");
}

/// Puts a lease for another run of another host into the lake's runs folder.
fn plant_lease(moto: &Moto, dir: &Path, expires_in_ms: i64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let lease = json!({
        "run_id": "other", "token": "t", "pipeline": "sparkify", "host": "elsewhere", "pid": 4242,
        "started_at_ms": now - 1000, "renewed_at_ms": now - 1000, "expires_at_ms": now + expires_in_ms
    });
    let folder = dir.join("lease");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("lease.json"), lease.to_string()).unwrap();
    moto.upload(&folder, "lake", "star/_dagrun");
}

#[test]
fn the_lease_on_s3_is_taken_with_conditional_writes() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    // A live holder: the create (If-None-Match: *) is refused, so the run stops, naming it.
    plant_lease(&moto, tmp.path(), 600_000);
    let run = run_s3(&moto, &["-q"]).expect(1);
    assert!(
        run.stderr.contains("another run holds the lake at s3://lake/star/_dagrun/lease.json: run other of pipeline `sparkify` on host elsewhere (pid 4242)"),
        "{}",
        run.stderr
    );
    assert!(moto.keys("lake", "star/songs").is_empty(), "nothing was written");
    // An expired one is taken over (If-Match on the version read), and released at the end.
    plant_lease(&moto, tmp.path(), -1000);
    let before = moto.stats()["conditional_writes"].as_u64().unwrap();
    let run = run_s3(&moto, &[]).expect(0);
    assert!(run.stderr.contains("took over the lease of a run that stopped renewing it: run other"), "{}", run.stderr);
    assert!(moto.stats()["conditional_writes"].as_u64().unwrap() >= before + 3, "create, take over, release");
    assert!(!moto.keys("lake", "star/_dagrun").contains(&"star/_dagrun/lease.json".to_string()));
}

#[test]
fn two_runs_into_one_lake_on_s3_never_mix() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, _tmp) = setup();
    // The first run reads slowly, so the second starts while it holds the lake.
    moto.faults(json!([{"kind": "delay", "method": "GET", "match": "song_data", "seconds": 0.3}]));
    let pipeline = sparkify();
    let first = moto
        .dagrun()
        .args([
            pipeline.to_str().unwrap(),
            "--set",
            "input=s3://udacity-dend/sample",
            "--set",
            "output=s3://lake/star",
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !moto.keys("lake", "star/_dagrun").contains(&"star/_dagrun/lease.json".to_string()) {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the first run never took the lease");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = run_s3(&moto, &["-q"]).expect(1);
    assert!(second.stderr.contains("another run holds the lake"), "{}", second.stderr);
    let first = Run::from(first.wait_with_output().unwrap()).expect(0);
    assert!(first.stdout.contains("all 18 tasks succeeded"), "{}", first.stdout);
}

#[test]
fn sustained_faults_on_ten_thousand_objects_slow_a_run_down_but_do_not_fail_it() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, tmp) = setup();
    let data = tmp.path().join("gen");
    run(&["generate", "--out", data.to_str().unwrap(), "--songs", "10000", "--events", "2000", "--seed", "3"])
        .expect(0);
    moto.upload(&data, "udacity-dend", "big");
    // Every third request fails and one connection in twenty is cut, for the whole run.
    moto.faults(json!([
        {"kind": "error500", "every": 3},
        {"kind": "reset", "every": 20}
    ]));
    let pipeline = sparkify();
    let run = Run::from(
        moto.dagrun()
            .args([
                pipeline.to_str().unwrap(),
                "--set",
                "input=s3://udacity-dend/big",
                "--set",
                "output=s3://lake/big",
                "--only",
                "check_songs",
                "--only",
                "check_songplays",
                "-q",
            ])
            .output()
            .unwrap(),
    )
    .expect(0);
    let stats = moto.stats();
    assert!(stats["injected"]["error500"].as_u64().unwrap() > 3000, "{stats}");
    assert!(stats["injected"]["reset"].as_u64().unwrap() > 500, "{stats}");
    assert_eq!(state(&run.stdout, "staging_songs"), "succeeded");
    assert!(run.stdout.contains("10,000"), "every song was read: {}", run.stdout);
}

#[test]
fn delta_tables_on_s3_are_committed_with_conditional_writes_and_read_by_deltalake() {
    if !runtimes(&[Runtime::Moto, Runtime::DeltaLake]) {
        return;
    }
    let (moto, _tmp) = setup();
    let before = moto.stats()["conditional_writes"].as_u64().unwrap();
    run_s3(&moto, &["-q"]).expect(0);
    run_s3(&moto, &["-q", "--force"]).expect(0);
    // Every commit file is created with If-None-Match: two commits for each of five tables.
    let after = moto.stats()["conditional_writes"].as_u64().unwrap();
    assert!(after >= before + 10, "{before} -> {after}");
    assert_eq!(
        moto.keys("lake", "star/songplays/_delta_log"),
        vec![
            "star/songplays/_delta_log/00000000000000000000.json",
            "star/songplays/_delta_log/00000000000000000001.json"
        ]
    );
    // Read straight from S3 by delta-rs's Python reader, at the new version and at the old one.
    let script = r#"
import json, sys
from deltalake import DeltaTable
options = {"AWS_ENDPOINT_URL": sys.argv[1], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
now = DeltaTable("s3://lake/star/songplays", storage_options=options)
old = DeltaTable("s3://lake/star/songplays", storage_options=options, version=0)
print(json.dumps([now.version(), now.to_pyarrow_table().num_rows, old.to_pyarrow_table().num_rows]), flush=True)
import os
os._exit(0)
"#;
    let out = std::process::Command::new("python3").args(["-c", script, &moto.endpoint()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen, json!([1, 6820, 6820]));
}

/// The frozen-commit scenario on S3: run A's `songplays` commit (a PUT with `If-None-Match`) is
/// held by the network, and A is stopped; run B takes the lake over once A's lease expires and
/// commits; then the held PUT reaches S3, and A wakes. A's version never lands, `LATEST` names B,
/// and every table reads as the local run.
#[test]
fn a_commit_held_by_the_network_past_a_takeover_never_lands() {
    if !runtimes(&[Runtime::Moto, Runtime::DeltaLake]) {
        return;
    }
    let (moto, tmp) = setup();
    run_s3(&moto, &["-q"]).expect(0);
    moto.faults(json!([{
        "kind": "hold", "method": "PUT", "match": "star/songplays/_delta_log/00000000000000000001.json", "limit": 1
    }]));
    let day = ["--partition", "2018-11-15", "--force", "-q"];
    let mut a = moto.dagrun();
    let pipeline = sparkify();
    a.args([pipeline.to_str().unwrap(), "--set", "input=s3://udacity-dend/sample", "--set", "output=s3://lake/star"])
        .args(day)
        .args(["--lease-ttl", "3s", "--run-id", "frozen"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let a = a.spawn().unwrap();
    let start = std::time::Instant::now();
    while moto.stats()["injected"]["hold"].as_u64().unwrap_or(0) == 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "A's commit never came");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: stopping a child of this test.
    assert_eq!(unsafe { libc::kill(a.id() as i32, libc::SIGSTOP) }, 0);

    let mut b_args = day.to_vec();
    b_args.extend(["--wait-for-lock", "60s", "--run-id", "taker"]);
    let b = run_s3(&moto, &b_args).expect(0);
    assert!(b.stderr.contains("took over the lease of a run that stopped renewing it: run frozen"), "{}", b.stderr);
    // The held PUT reaches S3 now, after B's version 1; then A wakes.
    moto.control("release", json!({}));
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(a.id() as i32, libc::SIGCONT) }, 0);
    let a = Run::from(a.wait_with_output().unwrap()).expect(1);
    assert!(a.stderr.contains("lost its lease") || a.stderr.contains("no longer holds"), "{}", a.stderr);
    moto.faults(json!([]));

    let log: Vec<String> =
        moto.keys("lake", "star/songplays/_delta_log").into_iter().filter(|k| k.ends_with(".json")).collect();
    assert_eq!(log.len(), 2, "version 0 and B's version 1 only: {log:?}");
    let latest = tmp.path().join("runs");
    moto.control("download", json!({"bucket": "lake", "prefix": "star/_dagrun", "dir": latest}));
    assert_eq!(std::fs::read_to_string(latest.join("LATEST")).unwrap().trim(), "taker");
    let reference = local_reference(tmp.path());
    assert_eq!(s3_tables(&moto, &tmp.path().join("after")), reference);
}

#[test]
fn missing_credentials_fail_at_once_and_say_where_credentials_are_looked_for() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let (moto, _tmp) = setup();
    let start = std::time::Instant::now();
    let mut cmd = moto.dagrun();
    cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env_remove("AWS_SESSION_TOKEN");
    let pipeline = sparkify();
    let run = Run::from(
        cmd.args([
            pipeline.to_str().unwrap(),
            "--set",
            "input=s3://udacity-dend/sample",
            "--set",
            "output=s3://lake/star",
            "-q",
        ])
        .output()
        .unwrap(),
    )
    .expect(1);
    assert!(run.stderr.contains("no AWS credentials were found"), "{}", run.stderr);
    assert!(run.stderr.contains("AWS_ACCESS_KEY_ID") && run.stderr.contains("AWS_PROFILE"), "{}", run.stderr);
    assert!(!run.stderr.contains("cannot reach"), "not a network error: {}", run.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(8), "took {:?}: retried", start.elapsed());
}

#[test]
fn a_dry_run_on_s3_without_credentials_is_quick_quiet_and_says_once_what_it_could_not_check() {
    // No credentials anywhere: no environment keys, an empty home (no ~/.aws), no instance.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dagrun();
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"] {
        cmd.env_remove(name);
    }
    for name in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
        cmd.env_remove(name);
    }
    cmd.env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([sparkify().to_str().unwrap(), "--set", "input=s3://udacity-dend", "--set", "output=s3://lake/star"])
        .arg("--dry-run");
    let started = std::time::Instant::now();
    let dry = Run::from(cmd.output().unwrap()).expect(0);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    let notes: Vec<&str> = dry.stdout.lines().filter(|l| l.contains("could not check what is up to date")).collect();
    assert_eq!(notes.len(), 1, "{}", dry.stdout);
    assert!(notes[0].contains("no AWS credentials were found"), "{}", notes[0]);
    assert!(dry.stdout.contains("step 1: 2 tasks start"), "the plan is still shown: {}", dry.stdout);
    assert_eq!(dry.stderr.trim(), "", "nothing on stderr: {}", dry.stderr);
}

#[test]
fn archive_storage_classes_are_refused_at_validate_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["GLACIER", "DEEP_ARCHIVE"] {
        let text = std::fs::read_to_string(sparkify())
            .unwrap()
            .replace("defaults:\n", &format!("storage:\n  s3:\n    storage_class: {class}\n\ndefaults:\n"));
        let p = pipeline(dir.path(), "archive.yaml", &text);
        let out = run(&["validate", p.to_str().unwrap()]).expect(2);
        assert!(
            out.stderr
                .contains(&format!("storage_class {class}: its objects must be restored before anyone reads them")),
            "{}",
            out.stderr
        );
        let line = text.lines().position(|l| l.contains("storage_class")).unwrap() + 1;
        assert!(out.stderr.contains(&format!("archive.yaml:{line}:")), "located: {}", out.stderr);
    }
}

#[test]
fn an_input_bucket_and_a_lake_in_two_other_regions_give_the_contracts_tables() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    // The seed's input is in us-west-2; this lake is in eu-west-1; the client's region is
    // us-east-1. The server answers as S3 does a request signed for the wrong region (301 or 400
    // with x-amz-bucket-region), which the Rust SDK does not follow by itself.
    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    moto.control(
        "upload",
        json!({"bucket": "udacity-dend", "prefix": "sample", "dir": sample(), "region": "us-west-2"}),
    );
    moto.control("bucket", json!({"bucket": "lake", "region": "eu-west-1"}));
    let reference = local_reference(tmp.path());
    let run = run_s3(&moto, &["-q"]).expect(0);
    assert!(run.stdout.contains("all 18 tasks succeeded"), "{}{}", run.stdout, run.stderr);
    assert_eq!(s3_tables(&moto, &tmp.path().join("tables")), reference);
    let stats = moto.stats();
    let wrong = stats["wrong_region"].as_u64().unwrap();
    assert!(wrong >= 2, "each bucket answered once for the wrong region, then was asked in its own: {stats}");
    assert!(wrong <= 6, "the region is asked once per bucket and process, not per request: {stats}");

    // The run record is read back from the lake's region (`emr gc` and `report` read it so too).
    let page = tmp.path().join("report.html");
    let args = ["report", "s3://lake/star/_dagrun", "--output", page.to_str().unwrap()];
    Run::from(moto.dagrun().args(args).output().unwrap()).expect(0);
    assert!(std::fs::read_to_string(page).unwrap().contains("Free vs paid"));
}
