//! Readable text for TOML parse errors: the key path and the value.
//!
//! The `toml` crate reports a position and a snippet of the offending line;
//! operators are better served by one line naming the full key
//! (`server.read_timeout`, including its table) and the value as written,
//! which is what every other config error in this crate says too. Values of
//! keys that look like secrets are not repeated.

/// One line naming the key path and the value the error points at, e.g.
/// ``key `server.read_timeout` = "5 parsecs": invalid duration ...``, falling
/// back to the parser's own (multi-line) report when there is no position.
pub fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return error.to_string().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let line_no = text[..line_start].matches('\n').count() + 1;
    if line.starts_with('[') {
        let table = line.trim_matches(|c| c == '[' || c == ']').trim();
        return format!("line {line_no}: table `[{table}]`: {message}");
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match line.split_once('=') {
        Some((key, value)) => {
            let key = key.trim();
            let path = match table {
                Some(table) => format!("{table}.{key}"),
                None => key.to_string(),
            };
            // The file is the wrong place for a secret, and so is a log.
            let lower = key.to_ascii_lowercase();
            let value = if ["secret", "password", "token"]
                .iter()
                .any(|w| lower.contains(w))
            {
                "<redacted>"
            } else {
                value.trim()
            };
            format!("line {line_no}: key `{path}` = {value}: {message}")
        }
        None => format!("line {line_no}: {line:?}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Doc {
            server: Option<Server>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Server {
            workers: Option<u32>,
        }
        let e = toml::from_str::<Doc>(text).expect_err("invalid");
        describe(text, &e)
    }

    #[test]
    fn names_table_key_and_value() {
        let cases = [
            (
                "[server]\nworkerz = 3\n",
                "line 2: key `server.workerz` = 3: unknown field",
            ),
            (
                "[server]\nworkers = \"ten\"\n",
                "line 2: key `server.workers` = \"ten\": invalid type",
            ),
            ("[serverr]\n", "line 1: table `[serverr]`: unknown field"),
            (
                "[server]\napi_token = \"abc123\"\n",
                "key `server.api_token` = <redacted>",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(
                got.starts_with(want) || got.contains(want),
                "{got:?} should contain {want:?}"
            );
        }
        assert!(!error("[server]\nsecret = \"abc123\"\n").contains("abc123"));
    }
}
