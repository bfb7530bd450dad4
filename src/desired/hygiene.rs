//! Secret hygiene, checked on the YAML tree before the JSON Schema layer: literal secrets where
//! a reference is expected, credential-shaped values anywhere, and URLs that carry credentials.
//!
//! Runs first so that no later layer (whose messages may quote values) ever looks at a secret:
//! every path reported here is "handled" and skipped by the schema layer, and a document with
//! a problem here never reaches the typed pass. No message built here contains the value it
//! refuses; each one shows the right form instead.
//!
//! Pure: no I/O.

use super::diagnostic::{Diagnostic, Seg, did_you_mean, looks_like_secret, render_path};
use super::types::Kind;
use super::yaml::{Node, Value, printable};

/// What the hygiene layer found in one document.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub diagnostics: Vec<Diagnostic>,
    /// Paths (and everything below them) already reported.
    pub handled: Vec<Vec<Seg>>,
    /// Mappings where a literal secret was refused: their "missing field" errors (the missing
    /// reference) are implied by the refusal and its hint, so they are not repeated.
    pub refused_in: Vec<Vec<Seg>>,
}

/// Key names that mean "a secret is written here" (compared lower-case without `-`/`_`).
const SECRET_KEYS: [&str; 17] = [
    "token",
    "bearertoken",
    "apikey",
    "apitoken",
    "accesstoken",
    "authtoken",
    "bottoken",
    "secret",
    "clientsecret",
    "password",
    "passwd",
    "privatekey",
    "authorization",
    "webhookurl",
    "webhook",
    "credentials",
    "key",
];

/// Query parameters that carry credentials.
const SECRET_PARAMS: [&str; 14] = [
    "token",
    "accesstoken",
    "apikey",
    "key",
    "secret",
    "clientsecret",
    "password",
    "passwd",
    "auth",
    "authorization",
    "sig",
    "signature",
    "bearer",
    "xamzsignature",
];

fn normalize(key: &str) -> String {
    key.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_lowercase()
}

/// The right form for a secret at `path` in a document of `kind`, shown in hints.
fn right_form(kind: Kind, path: &[Seg]) -> &'static str {
    let under = |k: &str| path.iter().any(|s| matches!(s, Seg::Key(x) if x == k));
    match kind {
        _ if under("metadata") => {
            "secrets never live in manifests, not even in labels: keep it in an environment \
             variable or a file"
        }
        Kind::Node if !under("telemetry") => {
            "reference it instead: `auth: { bearerTokenFrom: { env: NAME } }` \
             (or `{ file: /path/to/token }`)"
        }
        Kind::Routing if under("remotes") => {
            "reference it instead: `apiKeyFrom: { env: NAME }` (or `{ file: /path/to/key }`)"
        }
        Kind::Notifier => {
            "webhook URLs and bot tokens are secrets; reference the URL instead: \
             `urlFrom: { env: NAME }` (or `{ file: /path/to/url }`)"
        }
        Kind::Node if under("telemetry") => {
            "exporter URLs carry no credentials: scrape an exporter that answers without them \
             (bind it to the LAN or put it behind the node's firewall)"
        }
        Kind::Service => {
            "health probes send no credentials: probe an endpoint that answers without them \
             (most `/health` endpoints do)"
        }
        Kind::Cluster if under("api") => {
            "reference it instead: `api: { tokenFrom: { env: NAME } }` (or `{ file: /path/to/token }`)"
        }
        _ => {
            "secrets never live in manifests: put it in an environment variable or a file and \
             reference it, e.g. `{ env: NAME }`"
        }
    }
}

struct Check<'a> {
    kind: Kind,
    root: &'a Node,
    file: &'a str,
    found: Findings,
}

/// Checks one document (`root`) of `kind`.
pub(crate) fn check(kind: Kind, root: &Node, file: &str) -> Findings {
    let mut c = Check { kind, root, file, found: Findings::default() };
    c.reference_positions();
    c.walk();
    c.urls();
    c.found
}

impl Check<'_> {
    fn handled(&self, path: &[Seg]) -> bool {
        self.found.handled.iter().any(|h| path.starts_with(h))
    }

    fn refuse(&mut self, path: Vec<Seg>, message: String, hint: String) {
        let d = Diagnostic::error(self.file, message)
            .at(Some(self.root.key_mark(&path)))
            .path(render_path(&path))
            .hint(hint);
        self.found.diagnostics.push(d);
        self.found.handled.push(path);
    }

    fn refuse_literal(&mut self, path: Vec<Seg>) {
        let hint = right_form(self.kind, &path).to_owned();
        if let Some((_, parent)) = path.split_last() {
            self.found.refused_in.push(parent.to_vec());
        }
        self.refuse(
            path,
            "literal secret refused: secrets never live in manifests (value not shown)".to_owned(),
            hint,
        );
    }

    /// The places where a reference is expected, by kind.
    fn reference_positions(&mut self) {
        let root = self.root;
        let spec = |k: &str| vec![Seg::from("spec"), Seg::from(k)];
        match self.kind {
            Kind::Node => {
                let path = spec("auth");
                if let Some(auth) = root.at(&path)
                    && auth.scalar().is_some_and(|s| !s.is_null())
                {
                    self.refuse_literal(path);
                }
            }
            Kind::Notifier => {
                for key in ["url", "webhook", "webhookUrl"] {
                    let path = spec(key);
                    if root.at(&path).is_some_and(|n| n.scalar().is_some()) {
                        self.found.refused_in.push(vec![Seg::from("spec")]);
                        self.refuse(
                            path,
                            format!("`{key}` is not accepted: a webhook URL embeds its secret (value not shown)"),
                            right_form(Kind::Notifier, &[]).to_owned(),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Every mapping entry of the document: secret-named keys, `*From` references, and values
    /// shaped like credentials.
    fn walk(&mut self) {
        let root = self.root;
        let mut stack: Vec<(Vec<Seg>, &Node)> = vec![(Vec::new(), root)];
        while let Some((path, node)) = stack.pop() {
            if self.handled(&path) {
                continue;
            }
            match &node.value {
                Value::Map(entries) => {
                    for e in entries {
                        let mut p = path.clone();
                        p.push(Seg::Key(e.key.clone()));
                        if self.handled(&p) {
                            continue;
                        }
                        let norm = normalize(&e.key);
                        // Label and category names are the user's own words, not field names.
                        let free_keys = path.last().is_some_and(
                            |s| matches!(s, Seg::Key(k) if k == "labels" || k == "categories"),
                        );
                        if e.key.ends_with("From") && e.key.len() > 4 && !free_keys {
                            self.reference(p, &e.key, &e.value);
                        } else if !free_keys
                            && SECRET_KEYS.contains(&norm.as_str())
                            && e.value.scalar().is_some_and(|s| !s.is_null())
                        {
                            self.refuse_literal(p);
                        } else {
                            stack.push((p, &e.value));
                        }
                    }
                }
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let mut p = path.clone();
                        p.push(Seg::Index(i));
                        stack.push((p, item));
                    }
                }
                Value::Scalar(s) => {
                    if looks_like_secret(&s.text) {
                        let hint = right_form(self.kind, &path).to_owned();
                        self.refuse(
                            path,
                            "value looks like a secret and is refused: secrets never live in manifests (value not shown)".to_owned(),
                            hint,
                        );
                    }
                }
            }
        }
    }

    /// `xxxFrom:` must be `{ env: NAME }` or `{ file: PATH }`.
    fn reference(&mut self, path: Vec<Seg>, key: &str, node: &Node) {
        let form = format!("`{key}: {{ env: NAME }}` or `{key}: {{ file: /path/to/secret }}`");
        let hint = if self.kind == Kind::Notifier {
            format!("write {form}; a webhook URL embeds its secret, so it is referenced too")
        } else {
            format!("write {form}")
        };
        match &node.value {
            Value::Scalar(s) if s.is_null() => {
                self.refuse(path, format!("`{key}` is empty: expected a reference"), hint);
            }
            Value::Scalar(_) => self.refuse(
                path,
                format!(
                    "`{key}` expects a reference to a secret, not a literal value (value not shown)"
                ),
                hint,
            ),
            Value::Seq(_) => {
                self.refuse(path, format!("`{key}` expects a reference, found a list"), hint);
            }
            Value::Map(entries) => match entries.as_slice() {
                [e] if e.key == "env" => {
                    let name = e.value.as_str().unwrap_or_default();
                    let valid =
                        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let mut p = path.clone();
                    p.push(Seg::from("env"));
                    if !valid {
                        self.refuse(
                            p,
                            "`env` must name an environment variable (letters, digits and `_`, not starting with a digit); the value given is not shown".to_owned(),
                            hint,
                        );
                    } else {
                        self.found.handled.push(path);
                    }
                }
                [e] if e.key == "file" => {
                    let mut p = path.clone();
                    p.push(Seg::from("file"));
                    match e.value.as_str() {
                        Some(f) if !f.is_empty() => self.found.handled.push(path),
                        _ => self.refuse(
                            p,
                            "`file` must be a path to the file holding the secret".to_owned(),
                            hint,
                        ),
                    }
                }
                [e] => {
                    let mut p = path.clone();
                    p.push(Seg::Key(e.key.clone()));
                    let norm = normalize(&e.key);
                    if SECRET_KEYS.contains(&norm.as_str())
                        || matches!(norm.as_str(), "value" | "literal" | "plain" | "text")
                    {
                        self.refuse_literal(p);
                        return;
                    }
                    let shown = if looks_like_secret(&e.key) {
                        "(name not shown)".into()
                    } else {
                        printable(&e.key)
                    };
                    let suggestion = did_you_mean(&e.key, ["env", "file"])
                        .map_or(hint, |s| format!("did you mean `{s}`?"));
                    self.refuse(
                        p,
                        format!("unknown field `{shown}`: expected `env` or `file`"),
                        suggestion,
                    );
                }
                _ => {
                    self.refuse(path, format!("`{key}` needs exactly one of `env` or `file`"), hint)
                }
            },
        }
    }

    /// URLs must be http(s) and carry no credentials.
    fn urls(&mut self) {
        let root = self.root;
        let mut paths: Vec<Vec<Seg>> = Vec::new();
        let spec = Seg::from("spec");
        match self.kind {
            Kind::Node => {
                paths.push(vec![spec.clone(), Seg::from("url")]);
                let prom = [spec.clone(), Seg::from("telemetry"), Seg::from("prometheus")];
                if let Some(list) = root.at(&prom) {
                    for i in 0..list.items().len() {
                        let mut p = prom.to_vec();
                        p.push(Seg::Index(i));
                        paths.push(p);
                    }
                }
            }
            Kind::Service => paths.push(vec![spec.clone(), Seg::from("probe"), Seg::from("url")]),
            Kind::Routing => {
                let remotes = [spec.clone(), Seg::from("remotes")];
                if let Some(list) = root.at(&remotes) {
                    for i in 0..list.items().len() {
                        paths.push(vec![
                            spec.clone(),
                            Seg::from("remotes"),
                            Seg::Index(i),
                            Seg::from("url"),
                        ]);
                    }
                }
            }
            _ => {}
        }
        for path in paths {
            if self.handled(&path) {
                continue;
            }
            let Some(text) = root.at(&path).and_then(Node::as_str) else { continue };
            if let Err((message, hint)) = check_url(text) {
                let credential = message.contains("credential");
                let d = Diagnostic::error(self.file, message)
                    .at(Some(root.value_mark(&path)))
                    .path(render_path(&path))
                    .hint(if credential { right_form(self.kind, &path).to_owned() } else { hint });
                self.found.diagnostics.push(d);
                self.found.handled.push(path);
            }
        }
    }
}

/// Whether `text` is an http(s) URL without credentials. The error never quotes the URL.
pub(crate) fn check_url(text: &str) -> Result<(), (String, String)> {
    let example = "write it like `http://10.5.0.2:1234` or `https://api.example.com/v1`".to_owned();
    let url = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => return Err((format!("invalid URL: {e}"), example)),
    };
    if !matches!(url.scheme(), "http" | "https") {
        let scheme = printable(url.scheme());
        return Err((format!("URL scheme must be http or https, found `{scheme}`"), example));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(("URL has no host".to_owned(), example));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "URL carries credentials (`user:password@`); secrets never live in manifests (URL not shown)".to_owned(),
            String::new(),
        ));
    }
    for (k, v) in url.query_pairs() {
        if SECRET_PARAMS.contains(&normalize(&k).as_str()) || looks_like_secret(&v) {
            let shown =
                if looks_like_secret(&k) { "(name not shown)".to_owned() } else { printable(&k) };
            return Err((
                format!(
                    "URL carries a credential in its query (`{shown}=...`); secrets never live in manifests (URL not shown)"
                ),
                String::new(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// http(s) URLs pass; other schemes, userinfo and token parameters are refused without
    /// quoting the URL.
    #[test]
    fn urls() {
        assert!(check_url("http://10.5.0.2:1234").is_ok());
        assert!(check_url("https://api.example.com/v1?model=x").is_ok());
        let (m, _) = check_url("ftp://x").unwrap_err();
        assert_eq!(m, "URL scheme must be http or https, found `ftp`");
        let (m, _) = check_url("http://bob:hunter2@10.0.0.1").unwrap_err();
        assert!(m.contains("credentials") && !m.contains("hunter2"), "{m}");
        let (m, _) = check_url("https://x.example/hook?token=abc123").unwrap_err();
        assert!(m.contains("`token=...`") && !m.contains("abc123"), "{m}");
        let (m, _) = check_url("10.0.0.1:1234").unwrap_err();
        assert!(m.starts_with("URL scheme") || m.starts_with("invalid URL"), "{m}");
    }
}
