//! The layers (built-in defaults, then the optional TOML file, then `WXAUTH_*` variables),
//! merged by figment, and typed reads of the merged values that name the setting when a
//! value is wrong.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    str::FromStr,
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use serde::Deserialize;

use super::{
    ConfigError,
    catalog::{self, APPS_KEY, CLIENTS_KEY, Default, Setting, WEBHOOKS_KEY},
};

/// A value as written: TOML files may give numbers as numbers or as strings, the
/// environment gives strings. Each setting's own parser reads the text, so a wrong value
/// gets the same message from either layer.
#[derive(Debug, Clone)]
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a whole number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One `[[wechat_apps]]` table.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct AppEntry {
    pub(super) appid: String,
    #[serde(default)]
    pub(super) secret: String,
    #[serde(default)]
    pub(super) default_role: Option<String>,
    #[serde(default)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) redirect_uris: Vec<String>,
}

/// One `[[introspection_clients]]` table.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ClientEntry {
    pub(super) client_id: String,
    pub(super) secret: String,
}

/// One `[[webhooks]]` table.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct WebhookEntry {
    pub(super) url: String,
    pub(super) secret: String,
    #[serde(default)]
    pub(super) events: Vec<String>,
}

/// What figment extracts: the flat settings, and the lists.
#[derive(Deserialize)]
struct Layered {
    #[serde(default, rename = "wechat_apps")]
    apps: Vec<AppEntry>,
    #[serde(default)]
    introspection_clients: Vec<ClientEntry>,
    #[serde(default)]
    webhooks: Vec<WebhookEntry>,
    #[serde(flatten)]
    values: BTreeMap<String, Text>,
}

/// The merged values, read through the catalog. It remembers which settings were read, so
/// a test can show that every declared setting is used.
pub(super) struct Layers {
    values: BTreeMap<String, Text>,
    /// `[[wechat_apps]]` from the file.
    pub(super) apps: Vec<AppEntry>,
    /// `[[introspection_clients]]` from the file.
    pub(super) introspection_clients: Vec<ClientEntry>,
    /// `[[webhooks]]` from the file.
    pub(super) webhooks: Vec<WebhookEntry>,
    read: RefCell<BTreeSet<&'static str>>,
}

impl Layers {
    /// Merges the defaults, the file (checked first: unknown keys and value types are
    /// refused with the key named) and the environment as `env` reports it.
    pub(super) fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults: BTreeMap<&str, &str> = catalog::ALL
            .iter()
            .filter_map(|s| match s.default {
                Default::Value(value) => Some((s.key, value)),
                Default::Computed(_) => None,
            })
            .collect();
        let mut figment = Figment::new().merge(Serialized::defaults(defaults));
        if let Some(path) = file {
            figment = figment.merge(Toml::string(&checked_file(path)?));
        }
        // Only declared names are read: an unknown `WXAUTH_*` variable is warned about
        // (`unknown_env_vars`), never taken.
        let environment: BTreeMap<&str, String> =
            catalog::ALL.iter().filter_map(|s| env(&s.env()).map(|value| (s.key, value))).collect();
        let layered: Layered = figment.merge(Serialized::globals(environment)).extract().map_err(|e| {
            ConfigError::ParseFile { path: file.map(Path::to_path_buf).unwrap_or_default(), message: e.to_string() }
        })?;
        Ok(Self {
            values: layered.values,
            apps: layered.apps,
            introspection_clients: layered.introspection_clients,
            webhooks: layered.webhooks,
            read: RefCell::default(),
        })
    }

    /// The raw value, `None` when unset and the default is computed.
    pub(super) fn get(&self, setting: &Setting) -> Option<&str> {
        self.read.borrow_mut().insert(setting.key);
        self.values.get(setting.key).map(|t| t.0.as_str())
    }

    /// The settings read so far.
    #[cfg(test)]
    pub(super) fn read(&self) -> BTreeSet<&'static str> {
        self.read.borrow().clone()
    }

    /// A value parsed with `FromStr`; `expected` says what would have been accepted.
    pub(super) fn parse<T: FromStr>(&self, setting: &Setting, expected: &str) -> Result<Option<T>, ConfigError> {
        self.get(setting)
            .map(|raw| raw.trim().parse().map_err(|_| invalid(setting, format!("expected {expected}, got {raw:?}"))))
            .transpose()
    }

    /// A whole number within the setting's declared range.
    pub(super) fn number(&self, setting: &Setting) -> Result<u64, ConfigError> {
        let range = setting.range.unwrap_or_else(|| panic!("{} is declared without a range", setting.key));
        let expected = format!("a whole number of {} from {} to {}", range.unit, range.min, range.max);
        let value: u64 = self
            .parse(setting, &expected)?
            .unwrap_or_else(|| panic!("{} is declared without a default value", setting.key));
        if (range.min..=range.max).contains(&value) {
            Ok(value)
        } else {
            Err(invalid(setting, format!("expected {expected}, got {value}")))
        }
    }

    /// `on` or `off`; `default` when unset.
    pub(super) fn on_or_off(&self, setting: &Setting, default: bool) -> Result<bool, ConfigError> {
        match self.get(setting).map(str::trim) {
            None => Ok(default),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(invalid(setting, format!("expected on or off, got {other:?}"))),
        }
    }

    /// A path that must not be empty; `None` when unset.
    pub(super) fn path(&self, setting: &Setting) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(setting) {
            None => Ok(None),
            Some("") => Err(invalid(setting, "must not be empty".into())),
            Some(path) => Ok(Some(PathBuf::from(path))),
        }
    }
}

/// The error for a bad value of `setting`.
pub(super) fn invalid(setting: &Setting, reason: String) -> ConfigError {
    ConfigError::Invalid { env: setting.env(), key: setting.key, reason }
}

/// The file's text, once it is known to be TOML with known keys whose values are strings
/// or whole numbers, and well-formed `[[wechat_apps]]` tables.
fn checked_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::ParseFile { path: path.into(), message: e.message().to_owned() })?;
    for (key, value) in table {
        if key == APPS_KEY {
            check_tables(
                path,
                APPS_KEY,
                value,
                "appid",
                &["appid", "secret", "default_role", "kind", "redirect_uris"],
            )?;
            continue;
        }
        if key == CLIENTS_KEY {
            check_tables(path, CLIENTS_KEY, value, "client_id", &["client_id", "secret"])?;
            continue;
        }
        if key == WEBHOOKS_KEY {
            check_tables(path, WEBHOOKS_KEY, value, "url", &["url", "secret", "events"])?;
            continue;
        }
        let Some(setting) = catalog::ALL.iter().find(|s| s.key == key) else {
            let known = catalog::ALL.iter().map(|s| s.key).collect::<Vec<_>>().join(", ");
            let known = format!("{known}, [[{APPS_KEY}]], [[{CLIENTS_KEY}]], [[{WEBHOOKS_KEY}]]");
            return Err(ConfigError::UnknownKey { path: path.into(), key, known });
        };
        if !matches!(value, toml::Value::String(_) | toml::Value::Integer(_)) {
            return Err(invalid(setting, format!("expected a string or a whole number, got {value}")));
        }
    }
    Ok(text)
}

/// A list of `[[key]]` tables of strings, each with `required`, and no key outside
/// `allowed`.
fn check_tables(
    path: &Path,
    key: &'static str,
    value: toml::Value,
    required: &str,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    let expected = || ConfigError::Invalid {
        env: catalog::env_name(key),
        key,
        reason: format!("expected [[{key}]] tables of strings, each with {required}"),
    };
    let toml::Value::Array(items) = value else { return Err(expected()) };
    if items.is_empty() {
        return Err(expected());
    }
    for item in items {
        let toml::Value::Table(table) = item else { return Err(expected()) };
        if !table.contains_key(required) {
            return Err(expected());
        }
        for (name, value) in table {
            if !allowed.contains(&name.as_str()) {
                return Err(ConfigError::UnknownKey {
                    path: path.into(),
                    key: format!("{key}.{name}"),
                    known: allowed.iter().map(|a| format!("{key}.{a}")).collect::<Vec<_>>().join(", "),
                });
            }
            // `events` of a webhook is a list of kinds; `redirect_uris` of an app a list of URLs.
            let list = matches!(name.as_str(), "events" | "redirect_uris")
                && value.as_array().is_some_and(|a| a.iter().all(toml::Value::is_str));
            if !value.is_str() && !list {
                return Err(expected());
            }
        }
    }
    Ok(())
}

/// `WXAUTH_*` variables in the process environment that name no setting (typos, or
/// settings of another version), for a warning at start-up: they are otherwise ignored.
pub fn unknown_env_vars() -> Vec<String> {
    let known: Vec<String> = catalog::ALL.iter().map(Setting::env).collect();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|n| n.starts_with("WXAUTH_"))
        .collect();
    unknown.retain(|n| !known.contains(n));
    unknown.sort();
    unknown
}
