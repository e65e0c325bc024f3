//! `lidscope`: local intrinsic dimension of language-model embeddings, token by token.
//!
//! A thin binary over the workspace's libraries: it parses arguments, sets up logging and
//! progress, and calls the jobs of the `lidscope` library. Exit codes: 0 success, 1 failure, 2
//! usage error.

use std::process::ExitCode;

use clap::Parser;
use lidscope::args::Cli;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match lidscope::dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if lidscope::stdout_closed() {
                return ExitCode::SUCCESS;
            }
            eprintln!("lidscope: error: {e:#}");
            ExitCode::from(if lidscope::is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// `LIDSCOPE_LOG` (or `RUST_LOG`) sets the filter; `-v`/`-q` move the default level.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("LIDSCOPE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use lidscope::args::Cli;

    /// Every `lidscope` command line in deploy/ (one-line JSON arrays starting with "lidscope"),
    /// parsed by the binary's own parser, so that the files cannot drift from the CLI.
    #[test]
    fn deploy_command_lines_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let files = ["Dockerfile", "docker-compose.yml", "docker-compose.tls.yml", "kubernetes/lidscope.yaml"];
        let mut seen = 0;
        for f in files {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            for line in text.lines() {
                let Some(start) = line.find("[\"lidscope\"") else { continue };
                let end = start + line[start..].find(']').expect("a one-line array") + 1;
                let argv: Vec<String> = serde_json::from_str(&line[start..end]).unwrap_or_else(|e| panic!("{f}: {e}: {line}"));
                if argv.iter().any(|a| a == "--help") {
                    continue;
                }
                Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{f}: {argv:?} does not parse:\n{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} command lines found in deploy/");
    }

    /// The words of one shell command line: quotes ('...', "...") and backslash escapes as a shell
    /// reads them; variables and globs stay as written (they are values to the parser).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut cur, mut any) = (Vec::new(), String::new(), false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    any = true;
                    cur.extend(chars.by_ref().take_while(|c| *c != '\''));
                }
                '"' => {
                    any = true;
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => cur.extend(chars.next()),
                            c => cur.push(c),
                        }
                    }
                }
                '\\' => cur.extend(chars.next()),
                c if c.is_whitespace() => {
                    if any || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                        any = false;
                    }
                }
                c => cur.push(c),
            }
        }
        if any || !cur.is_empty() {
            words.push(cur);
        }
        words
    }

    /// `line` up to a `#` comment, a pipe or `&&` outside quotes.
    fn first_command(line: &str) -> &str {
        let (mut single, mut double, mut prev) = (false, false, ' ');
        for (i, c) in line.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single && prev != '\\' => double = !double,
                '#' | '|' | '&' | ';' if !single && !double && (c != '#' || prev.is_whitespace()) => return &line[..i],
                _ => {}
            }
            prev = c;
        }
        line
    }

    /// The README and the user guide's pages (docs/*.md), in name order.
    fn documents() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
            .expect("the user guide in docs/")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        docs.sort();
        std::iter::once(root.join("README.md")).chain(docs).collect()
    }

    /// Every relative link of the README and the user guide (`[text](path)`, `![alt](path)`)
    /// names a file of the repository, so that a moved page or an image left out of git fails CI
    /// (which runs in a fresh clone).
    #[test]
    fn documented_links_resolve() {
        let files = documents();
        let mut seen = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, _) in text.match_indices("](") {
                let rest = &text[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let link = &rest[..end];
                if link.contains("://") || link.contains(' ') {
                    continue;
                }
                let (target, anchor) = link.split_once('#').unwrap_or((link, ""));
                let path = if target.is_empty() { f.clone() } else { f.parent().unwrap().join(target) };
                assert!(path.exists(), "{}: link to {target} names no file", f.display());
                if !anchor.is_empty() {
                    let page = std::fs::read_to_string(&path).unwrap();
                    assert!(heading_anchors(&page).iter().any(|a| a == anchor), "{}: link to {link}: no such heading", f.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 2, "only {seen} relative links found");
    }

    /// The anchors a code host gives a Markdown page's headings: lower case, spaces as `-`,
    /// punctuation other than `-` and `_` dropped.
    fn heading_anchors(page: &str) -> Vec<String> {
        let mut in_code = false;
        let mut out = Vec::new();
        for line in page.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code || !line.starts_with('#') {
                continue;
            }
            let title = line.trim_start_matches('#').trim();
            let slug: String = title.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_').map(|c| if c == ' ' { '-' } else { c }).collect();
            out.push(slug);
        }
        out
    }

    /// Every `lidscope ...` command in the ```sh blocks of the README and the user guide parses
    /// with the binary's own parser, so that the documents cannot drift from the CLI.
    #[test]
    fn documented_command_lines_parse() {
        let files = documents();
        let mut seen = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let mut in_sh = false;
            let mut logical = String::new();
            for line in text.lines() {
                if line.trim_start().starts_with("```") {
                    in_sh = !in_sh && line.trim_start().trim_start_matches('`').trim() == "sh";
                    continue;
                }
                if !in_sh {
                    continue;
                }
                if let Some(body) = line.strip_suffix('\\') {
                    logical.push_str(body);
                    logical.push(' ');
                    continue;
                }
                logical.push_str(line);
                let command = std::mem::take(&mut logical);
                let words = shell_words(first_command(command.trim_start()));
                if words.first().map(String::as_str) != Some("lidscope") || words.iter().any(|w| w == "--help") {
                    continue;
                }
                Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{}: {words:?} does not parse:\n{e}", f.display()));
                seen += 1;
            }
        }
        assert!(seen >= 20, "only {seen} lidscope command lines found in {files:?}");
        eprintln!("{seen} documented command lines parse");
        // The check can fail: a wrong flag and quoting as a shell reads it.
        assert!(Cli::try_parse_from(shell_words("lidscope run --no-such-flag")).is_err());
        assert_eq!(shell_words(r#"lidscope run --where "position = 3 AND split = 'val'" --x a\ b"#), ["lidscope", "run", "--where", "position = 3 AND split = 'val'", "--x", "a b"]);
        assert_eq!(first_command("lidscope sql x | head  # a comment"), "lidscope sql x ");
    }
}
