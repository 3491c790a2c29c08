use super::*;
use crate::path::compile_glob;
use crate::storage::ManifestFile;

fn tree(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f.as_bytes()).unwrap();
    }
    dir
}

#[test]
fn leftovers_are_staging_folders_and_commit_temporaries_of_dagrun_only() {
    let dir = tree(&[
        ".songs.staging-r-p-1/year=2018/part-00000.parquet",
        "songs/_delta_log/00000000000000000000.json",
        "songs/_delta_log/.00000000000000000001.json.tmp-4242-123456789",
        "songs/_delta_log/.my-notes.tmp",
        "songs/_delta_log/.00000000000000000001.json.tmp-x-1",
        "songs/year=2018/part-00000-r-p-1.parquet",
    ]);
    let (folders, temporaries) = local_leftovers(&dir.path().join("songs")).unwrap();
    let removed = remove_local_leftovers(&folders, &temporaries).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let left = files(dir.path());
    assert_eq!(
        left,
        [
            "songs/_delta_log/.00000000000000000001.json.tmp-x-1",
            "songs/_delta_log/.my-notes.tmp",
            "songs/_delta_log/00000000000000000000.json",
            "songs/year=2018/part-00000-r-p-1.parquet",
        ]
    );
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn of_many_writers_creating_one_file_exactly_one_wins_and_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("_delta_log/00000000000000000001.json");
    let winners: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                s.spawn(move || match create_exclusively(&path, format!("writer {i}\n").repeat(1000).as_bytes()) {
                    Ok(()) => true,
                    Err(e) if e.kind == StorageErrorKind::AlreadyExists => false,
                    Err(e) => panic!("{e}"),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1000, "complete, and one writer's");
    assert_eq!(text.lines().collect::<std::collections::BTreeSet<_>>().len(), 1);
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file or lock file is left beside it");
}

#[tokio::test]
async fn lists_matching_files_sorted_and_skips_hidden_ones() {
    let dir = tree(&["b/x.json", "a/y.json", "a/.DS_Store", "_SUCCESS", "a/z.txt", "a/deep/w.json"]);
    let root = dir.path().display().to_string();
    let found = LocalStorage.list(&root, &compile_glob("*/*.json").unwrap()).await.unwrap();
    let rel: Vec<_> = found.iter().map(|o| o.relative.as_str()).collect();
    assert_eq!(rel, vec!["a/y.json", "b/x.json"]);
    let all = LocalStorage.list(&root, &compile_glob("**").unwrap()).await.unwrap();
    assert_eq!(all.len(), 4);
}

#[cfg(unix)]
#[tokio::test]
async fn linked_folders_are_listed_whatever_their_name_and_loops_once() {
    use std::os::unix::fs::symlink;
    let dir = tree(&["in/2018/11/a.json", "elsewhere/late/b.json", "elsewhere/late/c.txt"]);
    let root = dir.path().join("in");
    symlink(dir.path().join("elsewhere/late"), root.join("2018/late")).unwrap();
    symlink(".", root.join("2018/11/loop.json")).unwrap();
    symlink(root.join("2018/11/a.json"), root.join("2018/11/again.json")).unwrap();
    symlink(dir.path().join("nowhere"), root.join("2018/11/broken.json")).unwrap();
    let glob = compile_glob("**/*.json").unwrap();
    let (files, notes) = list_local(&root, &glob).unwrap();
    let rel: Vec<_> = files.iter().map(|o| o.relative.as_str()).collect();
    assert_eq!(rel, vec!["2018/11/a.json", "2018/late/b.json"]);
    assert_eq!(
        notes,
        vec![
            "2018/11/broken.json is a link that cannot be followed (no such file or folder): skipped",
            "2018/11/loop.json leads to a folder already listed (2018/11): read once",
            "2018/11/again.json is the same file as 2018/11/a.json: read once",
        ]
    );
}

#[tokio::test]
async fn missing_root_is_not_found_but_empty_root_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let glob = compile_glob("**").unwrap();
    assert!(LocalStorage.list(&dir.path().display().to_string(), &glob).await.unwrap().is_empty());
    let err = LocalStorage.list(&dir.path().join("nope").display().to_string(), &glob).await.unwrap_err();
    assert_eq!(err.kind, StorageErrorKind::NotFound);
    assert!(err.to_string().starts_with("listing "), "{err}");
}

fn manifest(files: &[(&str, u64)]) -> TableManifest {
    TableManifest {
        table: "t".into(),
        run_id: "r1".into(),
        rows: 1,
        partition_by: Vec::new(),
        files: files.iter().map(|(p, s)| ManifestFile { path: p.to_string(), size: *s, rows: None }).collect(),
        fingerprint: None,
        slices: None,
        file_days: None,
    }
}

/// A folder holding the table `t` as an earlier run published it.
fn published() -> tempfile::TempDir {
    let dir = tree(&["t/old.parquet"]);
    let json = serde_json::to_vec(&manifest(&[("old.parquet", 13)])).unwrap();
    std::fs::write(dir.path().join("t").join(MANIFEST), json).unwrap();
    dir
}

#[tokio::test]
async fn a_committed_table_replaces_the_old_one_whole() {
    let dir = published();
    let target = dir.path().join("t").display().to_string();
    let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
    let file = LocalStorage.table_file(&write, "a=1/new.parquet");
    LocalStorage.write(&file.path, b"data".to_vec()).await.unwrap();
    // Until the commit the old table is what readers see.
    assert!(dir.path().join("t/old.parquet").exists());
    LocalStorage.commit_table(&write, &manifest(&[("a=1/new.parquet", 4)]), None).await.unwrap();
    let files: Vec<_> = ["a=1/new.parquet", "_manifest.json", "_SUCCESS"]
        .iter()
        .map(|f| dir.path().join("t").join(f).exists())
        .collect();
    assert_eq!(files, vec![true, true, true]);
    assert!(!dir.path().join("t/old.parquet").exists());
    assert!(!dir.path().join(".t.staging-r1").exists());
}

#[tokio::test]
async fn a_commit_with_a_short_file_keeps_the_old_table() {
    let dir = published();
    let target = dir.path().join("t").display().to_string();
    let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
    LocalStorage.write(&LocalStorage.table_file(&write, "new.parquet").path, b"da".to_vec()).await.unwrap();
    let err = LocalStorage.commit_table(&write, &manifest(&[("new.parquet", 4)]), None).await.unwrap_err();
    assert!(err.message.contains("2 bytes on disk, 4 written"), "{err}");
    assert!(dir.path().join("t/old.parquet").exists());
    LocalStorage.abort_table(&write, &[]).await.unwrap();
    assert!(!dir.path().join(".t.staging-r1").exists());
}

#[tokio::test]
async fn a_folder_dagrun_did_not_publish_is_never_replaced() {
    let dir = tree(&["t/input.json"]);
    let target = dir.path().join("t").display().to_string();
    let err = LocalStorage.begin_table(&target, "r1").await.unwrap_err();
    assert!(err.to_string().contains("refusing to replace"), "{err}");
    assert!(err.message.contains("such as `input.json`"), "{err}");
    // Even when the folder appears between the start and the swap.
    let dir = tree(&[]);
    let target = dir.path().join("t").display().to_string();
    let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
    LocalStorage.write(&LocalStorage.table_file(&write, "new.parquet").path, b"data".to_vec()).await.unwrap();
    std::fs::create_dir_all(dir.path().join("t")).unwrap();
    std::fs::write(dir.path().join("t/mine.txt"), "user data").unwrap();
    let err = LocalStorage.commit_table(&write, &manifest(&[("new.parquet", 4)]), None).await.unwrap_err();
    assert!(err.message.contains("such as `mine.txt`"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("t/mine.txt")).unwrap(), "user data");
}

#[tokio::test]
async fn access_checks_explain_what_they_found() {
    let dir = tree(&["file"]);
    let root = dir.path().display().to_string();
    assert!(LocalStorage.check_access(&root, false).await.ok);
    assert!(!LocalStorage.check_access(&format!("{root}/nope"), false).await.ok);
    let later = LocalStorage.check_access(&format!("{root}/a/b"), true).await;
    assert!(later.ok && later.detail.starts_with("will be created under"), "{later:?}");
    assert!(!LocalStorage.check_access(&format!("{root}/file/x"), true).await.ok);
}

#[test]
fn staging_is_a_hidden_sibling() {
    assert_eq!(staging_path("out/songs/", "r1"), "out/.songs.staging-r1");
    assert_eq!(staging_path("s3://b/lake/songs", "r1"), "s3://b/lake/.songs.staging-r1");
}
