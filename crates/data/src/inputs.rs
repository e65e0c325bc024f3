//! Turning the user's input arguments (files, directories, globs) into a list of Parquet files.
//!
//! The order is deterministic (patterns in order, each one's matches sorted) because the positional
//! identity of a token without id columns is `(file index, row)`: the same arguments must always
//! give the same file indices.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::store::{self, ObjectUrl};

/// Resolves input patterns to Parquet files.
///
/// Each pattern is a file (taken as is), a directory (every `*.parquet` file directly inside it,
/// sorted, skipping names that start with `.` or `_` such as `_SUCCESS` or temporary files), or a
/// glob (matches sorted; hidden files only when the pattern spells the dot). The result keeps the
/// patterns' order and drops later repeats of a file.
///
/// # Errors
/// [`DataError::NotFound`] when a pattern without glob characters names nothing,
/// [`DataError::NoMatch`] when a directory or glob yields no Parquet file,
/// [`DataError::BadPattern`] for a malformed glob and [`DataError::Io`] when a directory cannot be
/// listed.
pub fn resolve_inputs(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pattern in patterns {
        for path in resolve_one(pattern)? {
            if seen.insert(path.clone()) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn resolve_one(pattern: &str) -> Result<Vec<PathBuf>> {
    if let Some(url) = ObjectUrl::parse(pattern)? {
        return resolve_object(pattern, &url);
    }
    let path = Path::new(pattern);
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io(path, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') || !name.ends_with(".parquet") {
                continue;
            }
            let p = entry.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(DataError::NoMatch { pattern: pattern.to_string() });
        }
        return Ok(files);
    }
    if !pattern.contains(['*', '?', '[']) {
        return Err(DataError::NotFound { path: path.to_path_buf() });
    }
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| DataError::BadPattern { pattern: pattern.to_string(), message: e.to_string() })?;
    let mut files = Vec::new();
    for entry in paths {
        let p = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            DataError::io(&path, e.into())
        })?;
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoMatch { pattern: pattern.to_string() });
    }
    Ok(files)
}

/// [`resolve_one`] on an object store, where a directory is a key prefix: an object as named, the
/// `*.parquet` objects directly under `prefix/`, or a glob's matches (listed by the literal
/// prefix before its first wildcard). The same names are skipped as in a local directory.
fn resolve_object(pattern: &str, url: &ObjectUrl) -> Result<Vec<PathBuf>> {
    let as_path = |key: &str| PathBuf::from(ObjectUrl { bucket: url.bucket.clone(), key: key.to_string() }.url());
    let visible = |name: &str| !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet");
    if let Some(wild) = url.key.find(['*', '?', '[']) {
        let glob = glob::Pattern::new(&url.key).map_err(|e| DataError::BadPattern { pattern: pattern.to_string(), message: e.to_string() })?;
        let options = glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };
        let prefix = ObjectUrl { bucket: url.bucket.clone(), key: url.key[..wild].to_string() };
        let files: Vec<PathBuf> =
            store::list(&prefix)?.iter().map(|m| m.location.as_ref()).filter(|k| glob.matches_with(k, options)).map(as_path).collect();
        if files.is_empty() {
            return Err(DataError::NoMatch { pattern: pattern.to_string() });
        }
        return Ok(files);
    }
    if !url.key.is_empty() && !url.key.ends_with('/') {
        match store::head(url) {
            Ok(_) => return Ok(vec![as_path(&url.key)]),
            Err(DataError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let dir = if url.key.is_empty() || url.key.ends_with('/') { url.key.clone() } else { format!("{}/", url.key) };
    let listed = store::list(&ObjectUrl { bucket: url.bucket.clone(), key: dir.clone() })?;
    if listed.is_empty() {
        return Err(DataError::NotFound { path: PathBuf::from(pattern) });
    }
    let files: Vec<PathBuf> = listed
        .iter()
        .map(|m| m.location.as_ref())
        .filter(|k| k.get(dir.len()..).is_some_and(|name| !name.contains('/') && visible(name)))
        .map(as_path)
        .collect();
    if files.is_empty() {
        return Err(DataError::NoMatch { pattern: pattern.to_string() });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn files_directories_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["b.parquet", "a.parquet", "_SUCCESS", ".hidden.parquet", "_tmp.parquet", "notes.txt"] {
            touch(&d.join(name));
        }
        std::fs::create_dir(d.join("sub")).unwrap();
        touch(&d.join("sub/c.parquet"));

        let s = |p: &Path| p.to_string_lossy().into_owned();
        let got = resolve_inputs(&[s(d)]).unwrap();
        assert_eq!(got, vec![d.join("a.parquet"), d.join("b.parquet")]);

        let got = resolve_inputs(&[s(&d.join("sub/c.parquet")), format!("{}/*.parquet", s(d))]).unwrap();
        assert_eq!(got, vec![d.join("sub/c.parquet"), d.join("_tmp.parquet"), d.join("a.parquet"), d.join("b.parquet")]);

        // Repeats are dropped, first position wins.
        let got = resolve_inputs(&[s(&d.join("b.parquet")), s(d)]).unwrap();
        assert_eq!(got, vec![d.join("b.parquet"), d.join("a.parquet")]);
    }

    #[test]
    fn errors_name_the_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let e = resolve_inputs(&[format!("{d}/missing.parquet")]).unwrap_err();
        assert!(matches!(e, DataError::NotFound { .. }), "{e}");
        let pat = format!("{d}/*.parquet");
        let e = resolve_inputs(std::slice::from_ref(&pat)).unwrap_err();
        assert_eq!(e.to_string(), format!("no Parquet files match \"{pat}\""));
        let e = resolve_inputs(std::slice::from_ref(&d)).unwrap_err();
        assert!(matches!(e, DataError::NoMatch { .. }), "{e}");
    }
}

/// A file as it was when a run read it: what tells a later sweep whether its input changed.
///
/// Size and modification time, not a content hash: hashing every corpus file on every sweep
/// would read the whole corpus to learn that nothing changed. A file rewritten in place with the
/// same size within the file system's timestamp resolution goes unnoticed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputStamp {
    /// The file as the run resolved it.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time, nanoseconds since the Unix epoch (0 when the system has none).
    pub modified_ns: u64,
}

impl InputStamp {
    /// `path` as it is now.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file cannot be examined.
    pub fn of(path: &Path) -> Result<Self> {
        if let Some(url) = ObjectUrl::of(path)? {
            let meta = store::head(&url)?;
            let modified_ns = meta.last_modified.timestamp_nanos_opt().map_or(0, |n| u64::try_from(n).unwrap_or(0));
            return Ok(InputStamp { path: url.url(), bytes: meta.size, modified_ns });
        }
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(InputStamp { path: path.display().to_string(), bytes: meta.len(), modified_ns })
    }

    /// Each of `files` as it is now.
    ///
    /// # Errors
    /// As [`InputStamp::of`].
    pub fn all(files: &[PathBuf]) -> Result<Vec<Self>> {
        files.iter().map(|f| Self::of(f)).collect()
    }
}
