//! The commit protocol cut short at every step: the next run must find the last complete result.

use std::fs;
use std::path::Path;

use lidscope_data::{read_manifest, Manifest};

use super::*;

/// A pid no process has (Linux caps pids far below it).
const GONE: u32 = 999_999_999;

fn manifest(rows: u64, partition: &[(String, String)]) -> Manifest {
    Manifest { rows, partition: partition.iter().cloned().collect(), ..Manifest::default() }
}

/// A committed result whose files say `tag`.
fn result(out: &Path, tag: &str, partition: &[(String, String)]) {
    let l = Layout::new(out, partition);
    fs::create_dir_all(&l.data).unwrap();
    fs::write(l.data.join("part-00000.parquet"), tag).unwrap();
    fs::create_dir_all(l.reference.parent().unwrap()).unwrap();
    fs::write(&l.reference, tag).unwrap();
    lidscope_data::write_manifest(&l.manifest, &manifest(tag.len() as u64, partition)).unwrap();
}

/// A complete staged result of a run that is gone, whose files say `tag`.
fn staged(out: &Path, tag: &str, partition: &[(String, String)]) -> PathBuf {
    let dir = out.join(format!("{STAGING_PREFIX}{GONE}-0"));
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("data/part-00000.parquet"), tag).unwrap();
    fs::write(dir.join("reference.parquet"), tag).unwrap();
    fs::write(dir.join(PARTITION), serde_json::to_vec(partition).unwrap()).unwrap();
    lidscope_data::write_manifest(&dir.join(MANIFEST), &manifest(tag.len() as u64, partition)).unwrap();
    dir
}

fn assert_result(out: &Path, tag: &str, partition: &[(String, String)]) {
    let l = Layout::new(out, partition);
    assert_eq!(fs::read_to_string(l.data.join("part-00000.parquet")).unwrap(), tag);
    assert_eq!(fs::read_to_string(&l.reference).unwrap(), tag);
    assert_eq!(read_manifest(&l.manifest).unwrap().rows, tag.len() as u64);
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
                &|| fs::remove_file(&l.manifest).unwrap(),
                &|| fs::rename(&l.data, dir.join(".old-0")).unwrap(),
                &|| fs::rename(dir.join("data"), &l.data).unwrap(),
                &|| fs::rename(&l.reference, dir.join(".old-1")).unwrap(),
                &|| fs::rename(dir.join("reference.parquet"), &l.reference).unwrap(),
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
