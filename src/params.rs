//! Preset parameters: typed, with defaults and ranges, overridden by `--set key=value`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number.
    Int(u64),
    /// A real number.
    Float(f64),
    /// A list of whole numbers (`--set subsets=10,100,1000`).
    List(Vec<u64>),
    /// One of a fixed set of words (`--set variant=aux`).
    Text(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::List(v) => {
                let s: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "{}", s.join(","))
            }
            ParamValue::Text(v) => write!(f, "{v}"),
        }
    }
}

/// A parameter a preset accepts.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Name used with `--set`.
    pub key: &'static str,
    /// Default value; its variant is the parameter's type.
    pub default: ParamValue,
    /// Smallest accepted value (each element, for lists).
    pub min: f64,
    /// Largest accepted value (each element, for lists).
    pub max: f64,
    /// One line on what it means.
    pub help: &'static str,
    /// The accepted words of a word parameter (empty for numbers).
    pub choices: &'static [&'static str],
}

impl ParamSpec {
    /// A whole-number parameter.
    pub fn int(key: &'static str, default: u64, min: u64, max: u64, help: &'static str) -> Self {
        Self {
            key,
            default: ParamValue::Int(default),
            min: min as f64,
            max: max as f64,
            help,
            choices: &[],
        }
    }

    /// A word parameter: one of `choices`, the first being the default.
    pub fn choice(key: &'static str, choices: &'static [&'static str], help: &'static str) -> Self {
        Self {
            key,
            default: ParamValue::Text(choices[0].to_string()),
            min: 0.0,
            max: 0.0,
            help,
            choices,
        }
    }

    /// A real parameter.
    pub fn float(key: &'static str, default: f64, min: f64, max: f64, help: &'static str) -> Self {
        Self {
            key,
            default: ParamValue::Float(default),
            min,
            max,
            help,
            choices: &[],
        }
    }

    /// A list-of-whole-numbers parameter.
    pub fn list(
        key: &'static str,
        default: &[u64],
        min: u64,
        max: u64,
        help: &'static str,
    ) -> Self {
        Self {
            key,
            default: ParamValue::List(default.to_vec()),
            min: min as f64,
            max: max as f64,
            help,
            choices: &[],
        }
    }

    /// The same parameter with its default read from `text` (as `--set` reads values): a model
    /// file's `[train]` values are its defaults.
    pub fn with_default(&self, text: &str) -> Result<Self, String> {
        Ok(Self {
            default: self.parse(text)?,
            ..self.clone()
        })
    }

    /// The accepted words of a word parameter, its default first (empty for numbers).
    pub fn choices_default_first(&self) -> Vec<&'static str> {
        let mut words = self.choices.to_vec();
        if let ParamValue::Text(d) = &self.default {
            if let Some(i) = words.iter().position(|w| w == d) {
                let w = words.remove(i);
                words.insert(0, w);
            }
        }
        words
    }

    fn parse(&self, text: &str) -> Result<ParamValue, String> {
        let range = || format!("{} must be between {} and {}", self.key, self.min, self.max);
        let check = |v: f64| -> Result<(), String> {
            if v.is_finite() && v >= self.min && v <= self.max {
                Ok(())
            } else {
                Err(range())
            }
        };
        let int = |s: &str| -> Result<u64, String> {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("{} takes a whole number, got `{s}`", self.key))
        };
        match self.default {
            ParamValue::Int(_) => {
                let v = int(text)?;
                check(v as f64)?;
                Ok(ParamValue::Int(v))
            }
            ParamValue::Float(_) => {
                let v: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{} takes a number, got `{text}`", self.key))?;
                check(v)?;
                Ok(ParamValue::Float(v))
            }
            ParamValue::List(_) => {
                let v: Vec<u64> = text.split(',').map(int).collect::<Result<_, _>>()?;
                if v.is_empty() {
                    return Err(format!("{} takes a comma-separated list", self.key));
                }
                for x in &v {
                    check(*x as f64)?;
                }
                Ok(ParamValue::List(v))
            }
            ParamValue::Text(_) => {
                let t = text.trim();
                if self.choices.contains(&t) {
                    Ok(ParamValue::Text(t.to_string()))
                } else {
                    Err(format!(
                        "{} takes one of {}, got `{text}`",
                        self.key,
                        self.choices.join(", ")
                    ))
                }
            }
        }
    }
}

/// A bad `--set`: the message names the input and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// Resolved parameter values of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params(pub BTreeMap<String, ParamValue>);

impl Params {
    /// Defaults of `specs`, overridden by `sets` (each `key=value`).
    pub fn resolve(preset: &str, specs: &[ParamSpec], sets: &[String]) -> Result<Self, ParamError> {
        let mut values: BTreeMap<String, ParamValue> = specs
            .iter()
            .map(|s| (s.key.to_string(), s.default.clone()))
            .collect();
        for set in sets {
            let Some((key, value)) = set.split_once('=') else {
                return Err(ParamError(format!(
                    "--set {set}: expected key=value, for example --set {}={}",
                    specs[0].key, specs[0].default
                )));
            };
            let key = key.trim();
            let Some(spec) = specs.iter().find(|s| s.key == key) else {
                let keys: Vec<&str> = specs.iter().map(|s| s.key).collect();
                return Err(ParamError(format!(
                    "--set {set}: `{key}` is not a parameter of {preset}; valid keys: {}",
                    keys.join(", ")
                )));
            };
            let v = spec
                .parse(value)
                .map_err(|e| ParamError(format!("--set {set}: {e}")))?;
            values.insert(key.to_string(), v);
        }
        Ok(Self(values))
    }

    /// A whole-number parameter.
    pub fn usize(&self, key: &str) -> usize {
        match self.0.get(key) {
            Some(ParamValue::Int(v)) => *v as usize,
            other => panic!("parameter {key} is not a whole number: {other:?}"),
        }
    }

    /// A real parameter.
    pub fn f64(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(ParamValue::Float(v)) => *v,
            Some(ParamValue::Int(v)) => *v as f64,
            other => panic!("parameter {key} is not a number: {other:?}"),
        }
    }

    /// A word parameter.
    pub fn text(&self, key: &str) -> &str {
        match self.0.get(key) {
            Some(ParamValue::Text(v)) => v,
            other => panic!("parameter {key} is not a word: {other:?}"),
        }
    }

    /// A list parameter.
    pub fn list(&self, key: &str) -> Vec<usize> {
        match self.0.get(key) {
            Some(ParamValue::List(v)) => v.iter().map(|&x| x as usize).collect(),
            other => panic!("parameter {key} is not a list: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::int("depth", 32, 1, 1024, "layers"),
            ParamSpec::float("slope", 0.5, -10.0, 10.0, "slope"),
            ParamSpec::list("subsets", &[10, 100], 1, 1000, "sizes"),
            ParamSpec::choice("variant", &["plain", "aux"], "which"),
        ]
    }

    #[test]
    fn sets_override_defaults_with_the_right_types() {
        let p =
            Params::resolve("x", &specs(), &["depth=4".into(), "subsets=1,2,3".into()]).unwrap();
        assert_eq!(p.usize("depth"), 4);
        assert_eq!(p.f64("slope"), 0.5);
        assert_eq!(p.list("subsets"), vec![1, 2, 3]);
        assert_eq!(p.text("variant"), "plain");
        let p = Params::resolve("x", &specs(), &["variant=aux".into()]).unwrap();
        assert_eq!(p.text("variant"), "aux");
        let back: Params = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn an_unknown_key_lists_the_valid_ones() {
        let e = Params::resolve("untrained-mlp", &specs(), &["dpeth=3".into()]).unwrap_err();
        assert_eq!(
            e.0,
            "--set dpeth=3: `dpeth` is not a parameter of untrained-mlp; valid keys: depth, slope, subsets, variant"
        );
    }

    #[test]
    fn out_of_range_nan_and_malformed_values_are_refused() {
        for (set, msg) in [
            ("depth=0", "--set depth=0: depth must be between 1 and 1024"),
            (
                "slope=NaN",
                "--set slope=NaN: slope must be between -10 and 10",
            ),
            (
                "depth=two",
                "--set depth=two: depth takes a whole number, got `two`",
            ),
            (
                "subsets=5,2000",
                "--set subsets=5,2000: subsets must be between 1 and 1000",
            ),
            (
                "variant=skip",
                "--set variant=skip: variant takes one of plain, aux, got `skip`",
            ),
            (
                "depth",
                "--set depth: expected key=value, for example --set depth=32",
            ),
        ] {
            assert_eq!(
                Params::resolve("p", &specs(), &[set.into()]).unwrap_err().0,
                msg
            );
        }
    }
}
