//! Pure validation shared by the three kinds: every problem is collected, each with the path of
//! the field at fault, so a user fixes a spec in one round instead of one error at a time.

use std::fmt;

/// One thing wrong with a resource, at a field path such as `spec.filters[2].where`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending field, in the YAML's own field names.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid: {}", .resource, join(.problems))]
pub struct Invalid {
    /// `Kind/name` of the resource.
    pub resource: String,
    /// The problems, in field order.
    pub problems: Vec<Problem>,
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects problems while a validator walks a spec.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish(self, kind: &str, name: Option<&str>) -> Result<(), Invalid> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(Invalid {
            resource: format!("{kind}/{}", name.unwrap_or("<unnamed>")),
            problems: self.0,
        })
    }

    /// A resource name that becomes part of stream names and NATS subjects: a DNS-1123 label.
    pub(crate) fn check_name(&mut self, path: &str, name: Option<&str>) {
        match name {
            None => self.add(path, "is required"),
            Some(name) if !is_dns_label(name) => self.add(
                path,
                format!(
                    "{name:?} must be a DNS label: 1 to 63 lowercase letters, digits or '-', \
                     starting and ending with a letter or digit"
                ),
            ),
            Some(_) => {}
        }
    }

    /// A reference to another resource of the same namespace.
    pub(crate) fn check_reference(&mut self, path: &str, name: &str) {
        if !is_dns_label(name) {
            self.add(path, format!("{name:?} is not a valid resource name"));
        }
    }

    /// A SQL identifier that will be quoted into DDL: `[a-z_][a-z0-9_]{0,62}`.
    pub(crate) fn check_identifier(&mut self, path: &str, ident: &str) {
        if !is_sql_identifier(ident) {
            self.add(
                path,
                format!(
                    "{ident:?} is not a valid SQL identifier: use 1 to 63 characters of a-z, 0-9 \
                     and '_', starting with a letter or '_'"
                ),
            );
        }
    }

    /// A CEL expression, compiled with the same library the runtime uses.
    pub(crate) fn check_cel(&mut self, path: &str, expression: &str) {
        if expression.trim().is_empty() {
            self.add(path, "CEL expression is empty");
            return;
        }
        if let Err(error) = cel::Program::compile(expression) {
            self.add(
                path,
                format!("CEL does not compile: {}", one_line(&error.to_string())),
            );
        }
    }

    /// A JSON pointer (RFC 6901) such as `/id` or `/address/city`.
    pub(crate) fn check_pointer(&mut self, path: &str, pointer: &str) -> bool {
        match crate::pointer::tokens(pointer) {
            Ok(_) => true,
            Err(why) => {
                self.add(path, format!("{pointer:?} is not a JSON pointer: {why}"));
                false
            }
        }
    }

    /// A duration such as `90s`, `15m` or `720h`.
    pub(crate) fn check_duration(&mut self, path: &str, duration: &str) {
        if let Err(error) = parse_duration(duration) {
            self.add(
                path,
                format!("{duration:?} is not a duration ({error}); use e.g. 30s, 5m, 24h"),
            );
        }
    }
}

/// Parses a duration such as `90s`, `1h30m` or `720h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Whether `name` is a DNS-1123 label (what Kubernetes names most objects with).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Whether `name` is a DNS-1123 subdomain (ServiceAccounts, Secrets, PriorityClasses).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// Whether `value` is a label value: empty, or at most 63 of `[A-Za-z0-9._-]` starting and
/// ending with a letter or digit.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric())
}

/// Whether `key` is a label or annotation key: `[prefix/]name`, the prefix a DNS subdomain and
/// the name a non-empty label value.
pub fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Whether `ident` is a SQL identifier DreamPipe accepts: `[a-z_][a-z0-9_]{0,62}`.
pub fn is_sql_identifier(ident: &str) -> bool {
    let bytes = ident.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Whether `subject` is a NATS subject; `wildcards` allows `*` tokens and a final `>`.
pub fn is_nats_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    !subject.is_empty()
        && tokens.iter().enumerate().all(|(i, token)| {
            !token.is_empty()
                && !token.chars().any(|c| c.is_whitespace())
                && match *token {
                    "*" => wildcards,
                    ">" => wildcards && i == last,
                    t => !t.contains('*') && !t.contains('>'),
                }
        })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_identifiers_follow_the_documented_pattern() {
        for ok in ["a", "_", "customers", "by_city_2", &"a".repeat(63)] {
            assert!(is_sql_identifier(ok), "{ok} should be accepted");
        }
        for bad in [
            "",
            "Customers",
            "2x",
            "a-b",
            "a b",
            "é",
            "a;drop",
            &"a".repeat(64),
        ] {
            assert!(!is_sql_identifier(bad), "{bad} should be rejected");
        }
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_rules() {
        for ok in [
            "team",
            "example.com/team",
            "a.b-c_d",
            "kubernetes.io/hostname",
        ] {
            assert!(is_qualified_name(ok), "{ok} should be accepted");
        }
        for bad in [
            "",
            "/team",
            "Example.com/team",
            "a/b/c",
            "-team",
            "team-",
            &"a".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad} should be rejected");
        }
        assert!(is_label_value(""));
        assert!(is_label_value("Blue_1.2"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_dns_subdomain("high.priority-1"));
        assert!(!is_dns_subdomain("High"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn dns_labels_reject_dots_and_uppercase() {
        assert!(is_dns_label("customer-2"));
        for bad in ["", "-a", "a-", "a.b", "A", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad} should be rejected");
        }
    }
}
