//! Where in an input file a problem is, so every error about a config, policy or proxy
//! config file reads `file:line[:column]: message` and editors can jump to it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a file, printed `file`, `file:line` or `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known (a file that cannot be read has none).
    pub line: Option<u32>,
    /// 1-based column, when known (only with a line).
    pub column: Option<u32>,
}

impl SourceLocation {
    /// The whole file, no line (e.g. it cannot be read, or a problem of the file as a whole).
    pub fn file(file: impl Into<PathBuf>) -> Self {
        SourceLocation {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    /// A line of `file`, when `line` is known.
    pub fn line(file: impl Into<PathBuf>, line: Option<usize>) -> Self {
        SourceLocation {
            line: line.map(saturate),
            ..SourceLocation::file(file)
        }
    }

    /// The place a YAML parser reported, if it reported one.
    pub fn of_yaml(file: &Path, error: &serde_yaml_ng::Error) -> Self {
        let at = error.location();
        SourceLocation {
            file: file.to_owned(),
            line: at.as_ref().map(|l| saturate(l.line())),
            column: at.as_ref().map(|l| saturate(l.column())),
        }
    }
}

/// Lines and columns past `u32::MAX` (a 4 GiB line) print as `u32::MAX`.
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_file_line_and_column_when_known() {
        assert_eq!(SourceLocation::file("a.yaml").to_string(), "a.yaml");
        assert_eq!(
            SourceLocation::line("a.yaml", Some(3)).to_string(),
            "a.yaml:3"
        );
        let at = SourceLocation {
            column: Some(7),
            ..SourceLocation::line("a.yaml", Some(3))
        };
        assert_eq!(at.to_string(), "a.yaml:3:7");
        let no_line = SourceLocation {
            column: Some(7),
            ..SourceLocation::file("a.yaml")
        };
        assert_eq!(no_line.to_string(), "a.yaml");
    }

    #[test]
    fn yaml_errors_carry_their_place() {
        let err = serde_yaml_ng::from_str::<serde_yaml_ng::Value>("a: 1\nb: c: d\n")
            .err()
            .map(|e| SourceLocation::of_yaml(Path::new("x.yaml"), &e));
        let at = err.map(|a| (a.line, a.column.is_some()));
        assert_eq!(at, Some((Some(2), true)));
    }
}
