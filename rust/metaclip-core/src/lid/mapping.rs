//! LID code → metadata language mapping (spec §3).
//!
//! A flat table `code → language`. Codes absent from it go to [`OTHER`]. The built-in
//! default (`default_mapping.tsv`; `metaclip-curate lid-mapping` prints it for Python users)
//! maps every fastText lid.176 label to its Wikipedia code, merges Chinese variants into `zh`
//! and maps whatlang's ISO 639-3 codes to 2-letter codes. Users edit a copy: TSV lines
//! `code<TAB>language` (`#` comments), or a JSON object `{"code": "language"}`.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The merged set for unmapped, unknown and low-confidence texts. Always language index 0.
pub const OTHER: &str = "other";

/// The default mapping, as TSV.
pub const DEFAULT_TSV: &str = include_str!("default_mapping.tsv");

/// A validated mapping: codes to language indices, and the language names.
#[derive(Debug, Clone)]
pub struct Mapping {
    codes: BTreeMap<String, i16>,
    languages: Vec<String>,
}

impl Mapping {
    /// Build from (code, language) pairs. Languages are numbered `other` = 0, then the rest
    /// in sorted order, so the numbering depends only on the set of languages.
    pub fn from_pairs<I, S, T>(pairs: I) -> Result<Mapping>
    where
        I: IntoIterator<Item = (S, T)>,
        S: AsRef<str>,
        T: AsRef<str>,
    {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        for (code, lang) in pairs {
            let (code, lang) = (code.as_ref().trim(), lang.as_ref().trim());
            if code.is_empty() || lang.is_empty() {
                return Err(Error::invalid(format!(
                    "LID mapping: empty code or language in ({code:?}, {lang:?})"
                )));
            }
            if let Some(prev) = raw.insert(code.to_string(), lang.to_string()) {
                if prev != lang {
                    return Err(Error::invalid(format!(
                        "LID mapping: code {code:?} maps to both {prev:?} and {lang:?}"
                    )));
                }
            }
        }
        let mut names: Vec<String> = raw.values().filter(|l| *l != OTHER).cloned().collect();
        names.sort();
        names.dedup();
        let mut languages = vec![OTHER.to_string()];
        languages.extend(names);
        if languages.len() > i16::MAX as usize {
            return Err(Error::invalid(
                "LID mapping: too many languages (max 32767)",
            ));
        }
        let index: BTreeMap<&str, i16> = languages
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i as i16))
            .collect();
        let codes = raw
            .iter()
            .map(|(c, l)| (c.clone(), index.get(l.as_str()).copied().unwrap_or(0)))
            .collect();
        Ok(Mapping { codes, languages })
    }

    /// Parse TSV text (`code<TAB>language` per line; blank lines and `#` comments skipped).
    pub fn parse_tsv(text: &str, path: &str) -> Result<Mapping> {
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split('\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(c), Some(l), None) => pairs.push((c.to_string(), l.to_string())),
                _ => {
                    return Err(Error::Parse {
                        path: path.to_string(),
                        line: i as u64 + 1,
                        msg: "expected `code<TAB>language`".into(),
                    })
                }
            }
        }
        Mapping::from_pairs(pairs)
    }

    /// Parse a JSON object `{"code": "language", ...}`.
    pub fn parse_json(text: &str, path: &str) -> Result<Mapping> {
        let parse_err = |msg: String| Error::Parse {
            path: path.to_string(),
            line: 0,
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| parse_err("expected a JSON object {\"code\": \"language\"}".into()))?;
        let mut pairs = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let v = v
                .as_str()
                .ok_or_else(|| parse_err(format!("value for {k:?} is not a string")))?;
            pairs.push((k.clone(), v.to_string()));
        }
        Mapping::from_pairs(pairs)
    }

    /// Load a `.json` file or a TSV file (any other extension).
    pub fn load(path: &std::path::Path) -> Result<Mapping> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(&shown, e))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Mapping::parse_json(&text, &shown)
        } else {
            Mapping::parse_tsv(&text, &shown)
        }
    }

    /// The mapping from the file at `path`, from `pairs`, or the built-in one when neither
    /// is given (giving both is an error).
    pub fn from_path_or_pairs(
        path: Option<&std::path::Path>,
        pairs: Option<Vec<(String, String)>>,
    ) -> Result<Mapping> {
        match (path, pairs) {
            (Some(p), None) => Mapping::load(p),
            (None, Some(pairs)) => Mapping::from_pairs(pairs),
            (None, None) => Ok(Mapping::builtin()),
            (Some(_), Some(_)) => Err(Error::invalid(
                "give a mapping path or mapping pairs, not both",
            )),
        }
    }

    /// The built-in default mapping.
    pub fn builtin() -> Mapping {
        match Mapping::parse_tsv(DEFAULT_TSV, "default_mapping.tsv") {
            Ok(m) => m,
            // Covered by a unit test: the built-in file always parses.
            Err(_) => Mapping {
                codes: BTreeMap::new(),
                languages: vec![OTHER.to_string()],
            },
        }
    }

    /// Language names; index 0 is `other`.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Language index of a LID code (0 = `other` when unmapped).
    pub fn index(&self, code: &str) -> i16 {
        self.codes.get(code).copied().unwrap_or(0)
    }

    /// The (code, language) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.codes
            .iter()
            .map(|(c, &i)| (c.as_str(), self.languages[i as usize].as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_merges() {
        let m = Mapping::parse_tsv(DEFAULT_TSV, "default").expect("built-in mapping parses");
        let lang = |c: &str| m.languages()[m.index(c) as usize].clone();
        assert_eq!(m.languages()[0], OTHER);
        assert_eq!(lang("en"), "en");
        assert_eq!(lang("eng"), "en");
        assert_eq!(lang("yue"), "zh");
        assert_eq!(lang("zh_classical"), "zh");
        assert_eq!(lang("cmn"), "zh");
        assert_eq!(lang("cbk"), "cbk_zam");
        assert_eq!(lang("nob"), "no");
        assert_eq!(lang("xx-unknown"), OTHER);
        assert!(m.languages().len() > 150);
    }

    #[test]
    fn numbering_is_sorted_with_other_first() {
        let m = Mapping::from_pairs([("b", "y"), ("a", "x"), ("c", "other")]).expect("ok");
        assert_eq!(m.languages(), ["other", "x", "y"]);
        assert_eq!(m.index("a"), 1);
        assert_eq!(m.index("b"), 2);
        assert_eq!(m.index("c"), 0);
    }

    #[test]
    fn bad_input() {
        assert!(Mapping::from_pairs([("a", "x"), ("a", "y")]).is_err());
        assert!(Mapping::from_pairs([("", "x")]).is_err());
        assert!(Mapping::parse_tsv("en en", "f").is_err());
        assert!(Mapping::parse_tsv("a\tb\tc", "f").is_err());
        assert!(Mapping::parse_json("[1]", "f").is_err());
        assert!(Mapping::parse_json("{\"a\": 1}", "f").is_err());
        let m = Mapping::parse_json("{\"en\": \"en\", \"yue\": \"zh\"}", "f").expect("ok");
        assert_eq!(m.languages(), ["other", "en", "zh"]);
    }
}
