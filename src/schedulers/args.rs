//! Scheduler-specific arguments passed by name ([`Args`]), as bindings and the CLI receive them
//! (`s_churn=…`, `eta=…`), parsed into each scheduler's typed argument struct with errors that name
//! the argument and list the accepted ones.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Arguments by name: a JSON object whose keys are diffusers' parameter names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args(Map<String, Value>);

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// These arguments and `name = value`.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name = value`.
    pub fn insert(&mut self, name: &str, value: impl Into<Value>) {
        self.0.insert(name.to_owned(), value.into());
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The arguments as a JSON object.
    pub fn as_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// Parses into `T` (a `#[serde(default, deny_unknown_fields)]` struct). `what` names the call
    /// (`"EulerDiscreteScheduler.step"`) in errors.
    pub fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_path_to_error::deserialize(Value::Object(self.0.clone())).map_err(|e| {
            let inner = e.inner().to_string();
            let path = e.path().to_string();
            // An unknown field's error has the root path; take the name from serde's message.
            let name = if path == "." { backticked(&inner).unwrap_or("arguments").to_owned() } else { path };
            let inner = inner.replace("unknown field", "unknown argument").replace("expected one of", "it takes");
            let inner = inner.replace("there are no fields", "it takes no other arguments");
            Error::argument(&name, format!("{what}: {inner}"))
        })
    }
}

impl From<Map<String, Value>> for Args {
    fn from(map: Map<String, Value>) -> Self {
        Args(map)
    }
}

/// The first `` `name` `` in a serde message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Churn {
        s_churn: f64,
        s_noise: f64,
    }

    #[test]
    fn parses_by_name_and_names_bad_arguments() {
        let args = Args::new().with("s_churn", 0.5);
        assert_eq!(args.parse::<Churn>("Euler.step").unwrap(), Churn { s_churn: 0.5, s_noise: 0.0 });

        let e = Args::new().with("s_chrun", 0.5).parse::<Churn>("Euler.step").unwrap_err().to_string();
        assert!(e.contains("s_chrun") && e.contains("s_churn") && e.contains("Euler.step"), "{e}");

        let e = Args::new().with("s_noise", "x").parse::<Churn>("Euler.step").unwrap_err().to_string();
        assert!(e.contains("s_noise") && e.contains("string"), "{e}");
    }
}
