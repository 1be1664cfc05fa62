//! Application variables with Spin's providers and precedence: `--variable`
//! flags, then `SPIN_VARIABLE_<NAME>` environment variables, then the
//! manifest's defaults. Component variables and other `{{ name }}` templates
//! are rendered against the resolved application variables.

use crate::manifest::{check_variable_name, Manifest};
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Resolved application variables.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    values: BTreeMap<String, String>,
}

impl Variables {
    /// Resolves every application variable; fails, as `spin up` does, when a
    /// required variable has no value.
    pub fn resolve(
        manifest: &Manifest,
        cli: &[(String, String)],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        for (name, _) in cli {
            check_variable_name(name)?;
            if !manifest.variables.contains_key(name) {
                bail!("--variable {name} is not declared in the manifest");
            }
        }
        let mut values = BTreeMap::new();
        for (name, decl) in &manifest.variables {
            let from_cli = cli
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone());
            let from_env = || env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()));
            match from_cli.or_else(from_env).or_else(|| decl.default.clone()) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => bail!("required variable {name:?} has no value: set SPIN_VARIABLE_{} or --variable {name}=...", name.to_ascii_uppercase()),
            }
        }
        Ok(Self { values })
    }

    /// Renders a template such as `postgres://{{ db_host }}:{{db_port}}`.
    pub fn render(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unterminated template in {template:?}");
            };
            let name = after[..end].trim();
            match self.values.get(name) {
                Some(v) => out.push_str(v),
                None => bail!("template {template:?} refers to unknown variable {name:?}"),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "x"
[variables]
host = { default = "127.0.0.1" }
port = { default = "5432" }
secret = { required = true }
"#,
            PathBuf::from("."),
        )
        .unwrap()
    }

    #[test]
    fn cli_beats_env_beats_default() {
        let m = manifest();
        let env = |k: &str| match k {
            "SPIN_VARIABLE_PORT" => Some("6000".to_string()),
            "SPIN_VARIABLE_SECRET" => Some("env".to_string()),
            _ => None,
        };
        let v = Variables::resolve(&m, &[("secret".into(), "cli".into())], env).unwrap();
        assert_eq!(
            v.render("{{host}}:{{ port }}/{{ secret }}").unwrap(),
            "127.0.0.1:6000/cli"
        );
    }

    #[test]
    fn a_missing_required_variable_refuses_to_start() {
        let err = Variables::resolve(&manifest(), &[], |_| None).unwrap_err();
        assert!(err.to_string().contains("secret"));
    }

    #[test]
    fn unknown_template_names_are_errors() {
        let v = Variables::resolve(&manifest(), &[], |_| Some("x".into())).unwrap();
        assert!(v.render("{{ nope }}").is_err());
        assert!(v.render("{{ host").is_err());
    }
}
