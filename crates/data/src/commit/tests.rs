//! The commit protocol cut short at every step: the next run must find the last complete result.

use std::fs;
use std::path::Path;

use crate::manifest::{read_manifest, write_manifest};

use super::*;

/// A pid no process has (Linux caps pids far below it).
const GONE: u32 = 999_999_999;

fn manifest(rows: u64, partition: &[(String, String)]) -> Manifest {
    Manifest { rows, partition: partition.iter().cloned().collect(), ..Manifest::default() }
}

/// A committed result whose files say `tag`.
fn result(out: &Path, tag: &str, partition: &[(String, String)]) {
    let l = Layout::new(out, partition);
    fs::create_dir_all(l.data()).unwrap();
    fs::write(l.data().join("part-00000.parquet"), tag).unwrap();
    fs::create_dir_all(l.reference().parent().unwrap()).unwrap();
    fs::write(l.reference(), tag).unwrap();
    write_manifest(l.manifest(), &manifest(tag.len() as u64, partition)).unwrap();
}

/// A complete staged result of a run that is gone, whose files say `tag`.
fn staged(out: &Path, tag: &str, partition: &[(String, String)]) -> PathBuf {
    let dir = out.join(format!("{STAGING_PREFIX}{GONE}-0"));
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("data/part-00000.parquet"), tag).unwrap();
    fs::write(dir.join("reference.parquet"), tag).unwrap();
    fs::write(dir.join(PARTITION), serde_json::to_vec(partition).unwrap()).unwrap();
    write_manifest(&dir.join(MANIFEST), &manifest(tag.len() as u64, partition)).unwrap();
    dir
}

fn assert_result(out: &Path, tag: &str, partition: &[(String, String)]) {
    let l = Layout::new(out, partition);
    assert_eq!(fs::read_to_string(l.data().join("part-00000.parquet")).unwrap(), tag);
    assert_eq!(fs::read_to_string(l.reference()).unwrap(), tag);
    assert_eq!(read_manifest(l.manifest()).unwrap().rows, tag.len() as u64);
    assert!(fs::read_dir(out).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with('.')), "left-overs in {}", out.display());
}

#[test]
fn an_interrupted_swap_is_finished_by_the_next_run() {
    for partition in [vec![], vec![("model".to_string(), "m".to_string()), ("ckpt".to_string(), "3".to_string())]] {
        // The swap's steps, each a state in which a kill may leave the directory.
        for cut in 0..6 {
            let d = tempfile::tempdir().unwrap();
            let out = d.path();
            result(out, "old", &partition);
            let dir = staged(out, "brand-new", &partition);
            let l = Layout::new(out, &partition);
            let steps: [&dyn Fn(); 5] = [
                &|| fs::remove_file(l.manifest()).unwrap(),
                &|| fs::rename(l.data(), dir.join(".old-0")).unwrap(),
                &|| fs::rename(dir.join("data"), l.data()).unwrap(),
                &|| fs::rename(l.reference(), dir.join(".old-1")).unwrap(),
                &|| fs::rename(dir.join("reference.parquet"), l.reference()).unwrap(),
            ];
            steps.iter().take(cut).for_each(|step| step());
            recover(out).unwrap();
            assert_result(out, "brand-new", &partition);
        }
    }
}

#[test]
fn an_incomplete_staging_is_removed_and_a_running_one_kept() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    result(out, "old", &[]);
    let dir = staged(out, "unfinished", &[]);
    fs::remove_file(dir.join(MANIFEST)).unwrap();
    recover(out).unwrap();
    assert_result(out, "old", &[]);

    // Another process's run in progress (pid 1 always exists) and one of this process's.
    let theirs = out.join(format!("{STAGING_PREFIX}1-0"));
    fs::create_dir_all(&theirs).unwrap();
    let mine = Staging::begin(Layout::new(out, &[("k".into(), "v".into())]), false).unwrap();
    recover(out).unwrap();
    assert!(theirs.exists() && mine.dir.exists());
    let path = mine.dir.clone();
    drop(mine);
    assert!(!path.exists());
}

/// A staging directory named by attempt id, owned as `owner` says.
fn owned(out: &Path, attempt: &str, host: &str, pid: u32) -> PathBuf {
    let dir = out.join(format!("{STAGING_PREFIX}{attempt}"));
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join(OWNER), serde_json::to_vec(&Owner { host: host.into(), pid }).unwrap()).unwrap();
    dir
}

#[test]
fn ownership_is_by_host_and_pid_not_by_name() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    let here = host_name();
    let dead_here = owned(out, "a1", here, GONE);
    let alive_here = owned(out, "a2", here, 1);
    // Another host's run: its pid means nothing here, so it is never taken for dead.
    let elsewhere = owned(out, "a3", "some-other-host", GONE);
    // No owner file yet, just created: its run may be about to write it.
    let fresh = out.join(format!("{STAGING_PREFIX}a4"));
    fs::create_dir_all(&fresh).unwrap();
    recover(out).unwrap();
    assert!(!dead_here.exists());
    assert!(alive_here.exists() && elsewhere.exists() && fresh.exists());

    let s = Staging::begin(Layout::new(out, &[]), false).unwrap();
    let owner: Owner = serde_json::from_slice(&fs::read(s.dir.join(OWNER)).unwrap()).unwrap();
    assert_eq!(owner, Owner::this_process());
    assert_ne!(s.dir.file_name(), Staging::begin(Layout::new(out, &[]), false).unwrap().dir.file_name());
}

#[test]
fn a_result_of_the_earlier_layout_counts_and_is_replaced_whole() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    let partition = vec![("model".to_string(), "m".to_string())];
    let l = Layout::new(out, &partition);
    fs::create_dir_all(l.data()).unwrap();
    fs::write(l.data().join("part-00000.parquet"), "old").unwrap();
    let legacy = l.data().join("manifest.json");
    write_manifest(&legacy, &manifest(3, &partition)).unwrap();

    let e = Staging::begin(l.clone(), false).err().expect("an existing result is refused");
    assert!(e.to_string().contains("model=m already holds a result (manifest.json)"), "{e}");
    let s = Staging::begin(l.clone(), true).unwrap();
    fs::write(s.data_dir().join("part-00000.parquet"), "new").unwrap();
    s.commit(&manifest(3, &partition)).unwrap();
    assert!(!legacy.exists());
    assert_eq!(fs::read_to_string(l.data().join("part-00000.parquet")).unwrap(), "new");
    assert_eq!(crate::find_manifests(out).unwrap(), vec![l.manifest().to_path_buf()]);
}

#[test]
fn a_resumable_run_keeps_its_work_until_committed() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    let partition = vec![("model".to_string(), "m".to_string())];
    let l = Layout::new(out, &partition);
    let (s, resumed) = Staging::resumable(l.clone(), false, "key1").unwrap();
    assert!(!resumed);
    fs::write(s.data_dir().join("part-00000.parquet"), "shard 0").unwrap();
    let dir = s.dir().to_path_buf();
    // Its process gives up (a crash or a cancel): the work stays, and other runs leave it alone.
    drop(s);
    recover(out).unwrap();
    Staging::begin(Layout::new(out, &[("model".to_string(), "other".to_string())]), false).unwrap();
    assert!(dir.join("data/part-00000.parquet").exists());

    // The same run again picks it up; while it is held, nobody else may.
    let (s, resumed) = Staging::resumable(l.clone(), false, "key1").unwrap();
    assert!(resumed && s.dir() == dir);
    assert_eq!(fs::read_to_string(s.data_dir().join("part-00000.parquet")).unwrap(), "shard 0");
    let e = Staging::resumable(l.clone(), false, "key1").err().expect("held by a live run");
    assert!(e.to_string().contains("in progress"), "{e}");
    s.commit(&manifest(7, &partition)).unwrap();
    assert_eq!(read_manifest(l.manifest()).unwrap().rows, 7);
    assert!(!dir.exists());

    // Other parameters for the same partition: the stale run of the old ones is cleared.
    let (s, _) = Staging::resumable(l.clone(), true, "key2").unwrap();
    let stale = s.dir().to_path_buf();
    drop(s);
    let (s, resumed) = Staging::resumable(l.clone(), true, "key3").unwrap();
    assert!(!resumed && !stale.exists());
    // Bad input: the run cannot succeed as it stands, so its work goes.
    let gone = s.dir().to_path_buf();
    s.abandon();
    assert!(!gone.exists());
}
