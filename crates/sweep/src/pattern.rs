//! A corpus path pattern: `emb/{model}/step-{step}/layer-{layer}.parquet`.
//!
//! `{name}` captures one path component or part of one (no `/`); `*`, `?` and `**` are glob
//! wildcards that capture nothing, so `emb/{model}/step-{step}/*.parquet` makes one run of every
//! directory of part files. The pattern is listed as a glob (captures read as `*`) and each path
//! found is read back with a regex to recover the captures. Names starting with `.` or `_`
//! (temporary files, `_SUCCESS`) are never matched by a wildcard or a capture.
//!
//! A pattern may name objects (`s3://bucket/emb/{model}/step-{step}/`): they are listed by the
//! prefix before the first wildcard or capture, and each object and each "directory" above it
//! is matched as a path would be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lidscope_data::store::ObjectUrl;
use regex::Regex;

use crate::error::{Result, SweepError};

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    glob: String,
    regex: Regex,
    captures: Vec<String>,
}

/// The paths one combination of capture values matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Capture values, in the pattern's order.
    pub values: Vec<String>,
    /// Matched files or directories, sorted.
    pub paths: Vec<PathBuf>,
}

impl Pattern {
    /// Compiles `text`, relative to `base` unless absolute (or an object URL).
    ///
    /// # Errors
    /// A message for an unclosed `{`, an empty or malformed capture name, a name used twice, or
    /// two captures side by side (nothing would tell where one ends).
    pub fn parse(text: &str, base: &Path) -> std::result::Result<Pattern, String> {
        let full = crate::spec::place(base, text);
        let full = full.to_str().ok_or("the path is not UTF-8")?.to_string();
        let (mut glob, mut regex, mut captures) = (String::new(), String::from("^"), Vec::<String>::new());
        let mut chars = full.chars().peekable();
        let mut last_was_capture = false;
        while let Some(c) = chars.next() {
            let mut capture = false;
            match c {
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit());
                    if !valid {
                        return Err(format!("{{{name}}} is not a capture name (letters, digits and _, closed by }})"));
                    }
                    if captures.contains(&name) {
                        return Err(format!("capture {{{name}}} appears twice"));
                    }
                    if last_was_capture {
                        return Err(format!("capture {{{name}}} follows another capture directly: nothing tells where one ends"));
                    }
                    glob.push('*');
                    regex.push_str(&format!("(?P<{name}>[^/._][^/]*?)"));
                    captures.push(name);
                    capture = true;
                }
                '}' => return Err("a '}' without its '{'".into()),
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    glob.push_str("**");
                    regex.push_str("(?:[^/._][^/]*/)*?");
                    // `**/` is a directory chain (possibly empty): its slash is part of it.
                    if chars.peek() == Some(&'/') {
                        chars.next();
                        glob.push('/');
                    }
                }
                '*' => {
                    glob.push('*');
                    regex.push_str("(?:[^/._][^/]*)?");
                }
                '?' => {
                    glob.push('?');
                    regex.push_str("[^/]");
                }
                c => {
                    glob.push_str(&glob::Pattern::escape(&c.to_string()));
                    regex.push_str(&regex::escape(&c.to_string()));
                }
            }
            last_was_capture = capture;
        }
        // A directory given with a trailing slash matches the directory itself.
        let trimmed = regex.trim_end_matches('/').to_string();
        let regex = Regex::new(&format!("{trimmed}/?$")).map_err(|e| e.to_string())?;
        Ok(Pattern { text: text.to_string(), glob: glob.trim_end_matches('/').to_string(), regex, captures })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Capture names in order.
    pub fn captures(&self) -> &[String] {
        &self.captures
    }

    /// Every combination of capture values that matches something now, in path order.
    ///
    /// # Errors
    /// [`SweepError::Io`] when a directory on the way cannot be read.
    pub fn matches(&self) -> Result<Vec<Match>> {
        let paths: Vec<PathBuf> = match ObjectUrl::parse(&self.glob)? {
            Some(url) => self.objects(&url)?,
            None => {
                let options = glob::MatchOptions { require_literal_leading_dot: true, ..Default::default() };
                let paths = glob::glob_with(&self.glob, options).map_err(|e| SweepError::Io {
                    path: PathBuf::from(&self.glob),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
                })?;
                paths
                    .map(|entry| entry.map_err(|e| SweepError::Io { path: e.path().to_path_buf(), source: std::io::Error::other(e.to_string()) }))
                    .collect::<Result<_>>()?
            }
        };
        let mut by_values: BTreeMap<Vec<String>, Vec<PathBuf>> = BTreeMap::new();
        for path in paths {
            let Some(text) = path.to_str() else { continue };
            let Some(caps) = self.regex.captures(text) else { continue };
            let values: Vec<String> = self.captures.iter().map(|n| caps[n.as_str()].to_string()).collect();
            by_values.entry(values).or_default().push(path);
        }
        Ok(by_values
            .into_iter()
            .map(|(values, mut paths)| {
                paths.sort();
                Match { values, paths }
            })
            .collect())
    }

    /// The objects under the pattern's literal prefix and the "directories" between them and it,
    /// as URLs (a directory with a trailing `/`, as an input prefix is written).
    fn objects(&self, url: &ObjectUrl) -> Result<Vec<PathBuf>> {
        let literal = url.key.find(['*', '?', '[']).map_or(url.key.as_str(), |i| &url.key[..i]);
        let prefix = ObjectUrl { bucket: url.bucket.clone(), key: literal.to_string() };
        let mut found = std::collections::BTreeSet::new();
        for meta in lidscope_data::store::list(&prefix)? {
            let key = meta.location.as_ref();
            found.insert(ObjectUrl { bucket: url.bucket.clone(), key: key.to_string() }.url());
            let mut end = key.len();
            while let Some(i) = key[..end].rfind('/') {
                if i < literal.rfind('/').map_or(0, |j| j) {
                    break;
                }
                found.insert(ObjectUrl { bucket: url.bucket.clone(), key: format!("{}/", &key[..i]) }.url());
                end = i;
            }
        }
        Ok(found.into_iter().map(PathBuf::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn captures_are_read_back_and_part_files_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["emb/a/step-10/l-1.parquet", "emb/a/step-200/l-1.parquet", "emb/b/step-10/l-2.parquet", "emb/b/step-10/_tmp.parquet", "emb/b/step-10/l-x.txt"] {
            touch(&d.join(f));
        }
        let p = Pattern::parse("emb/{model}/step-{step}/l-{layer}.parquet", d).unwrap();
        assert_eq!(p.captures(), ["model", "step", "layer"]);
        let m = p.matches().unwrap();
        let values: Vec<Vec<&str>> = m.iter().map(|m| m.values.iter().map(|s| s.as_str()).collect()).collect();
        assert_eq!(values, [vec!["a", "10", "1"], vec!["a", "200", "1"], vec!["b", "10", "2"]]);

        touch(&d.join("emb/b/step-10/part-1.parquet"));
        let p = Pattern::parse("emb/{model}/step-{step}/*.parquet", d).unwrap();
        let m = p.matches().unwrap();
        assert_eq!(m.len(), 3);
        let b = m.iter().find(|m| m.values == ["b", "10"]).unwrap();
        assert_eq!(b.paths.len(), 2, "two part files of one run, {:?}", b.paths);
        assert!(b.paths.iter().all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_')));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let base = Path::new("/x");
        assert!(Pattern::parse("emb/{model/x", base).unwrap_err().contains("capture name"));
        assert!(Pattern::parse("emb/{m}/{m}", base).unwrap_err().contains("twice"));
        assert!(Pattern::parse("emb/{a}{b}", base).unwrap_err().contains("directly"));
        assert!(Pattern::parse("emb/{1a}", base).unwrap_err().contains("capture name"));
        assert!(Pattern::parse("emb/x}", base).is_err());
        assert!(Pattern::parse("emb/x.parquet", base).unwrap().captures().is_empty());
    }
}
