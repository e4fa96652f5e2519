//! A validated configuration: the values an app gets, with secrets known as such so that
//! displays can mask them.

use indexmap::IndexMap;
use serde_json::{Map, Value};

/// What a secret's value is replaced with in displays. A form that sends it back unchanged
/// keeps the secret (see [`Spec::merge_with_previous`](super::Spec::merge_with_previous)).
pub const MASK: &str = "********";

/// A configuration checked against a spec: field name → normalised value, in the spec's
/// field order, defaults filled in. Made by [`Spec::validate`](super::Spec::validate).
///
/// `Debug` masks secrets; [`Config::values`] reveals them (for the app's config file and
/// for storage), [`Config::masked`] is for showing.
#[derive(Clone, PartialEq, Default)]
pub struct Config {
    values: IndexMap<String, Value>,
    secrets: Vec<String>,
}

impl Config {
    pub(crate) fn new(values: IndexMap<String, Value>, secrets: Vec<String>) -> Self {
        Self { values, secrets }
    }

    /// A configuration without values: that of an app without a config spec.
    pub fn empty() -> Self {
        Self::default()
    }

    /// One value, secrets included.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Every value, secrets included, in the spec's order.
    pub fn values(&self) -> &IndexMap<String, Value> {
        &self.values
    }

    /// The values as a JSON object, secrets included: the form [`Spec::validate`](super::Spec::validate)
    /// accepts back, e.g. after storage.
    pub fn to_input(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether the field is a secret of the spec this configuration was checked against.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|secret| secret == name)
    }

    /// The values for display: each secret that has a value shows [`MASK`] instead.
    pub fn masked(&self) -> IndexMap<String, Value> {
        self.values
            .iter()
            .map(|(name, value)| {
                let shown = if self.is_secret(name) {
                    Value::String(MASK.into())
                } else {
                    value.clone()
                };
                (name.clone(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}
