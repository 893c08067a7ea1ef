//! The languages texts are written in, and how a requested language falls
//! back to one of them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    Ko,
    En,
    Vi,
    Zh,
}

impl Locale {
    pub const ALL: [Locale; 4] = [Locale::Ko, Locale::En, Locale::Vi, Locale::Zh];

    /// The service's own language, used when nothing else is known.
    pub const DEFAULT: Locale = Locale::Ko;

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Ko => "ko",
            Locale::En => "en",
            Locale::Vi => "vi",
            Locale::Zh => "zh",
        }
    }

    /// Exactly one of the supported codes, e.g. for a stored preference.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == code)
    }

    /// The best supported language for a BCP 47 tag such as `vi-VN` or
    /// `zh-Hant-TW`. A language we have no texts for falls back to English,
    /// which more immigrant readers understand than Korean.
    pub fn negotiate(tag: &str) -> Self {
        let primary = tag
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if primary.is_empty() {
            return Self::DEFAULT;
        }
        Self::parse(&primary).unwrap_or(Locale::En)
    }

    /// The best supported language for an `Accept-Language` header value,
    /// honouring quality weights.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut ranked: Vec<(f32, &str)> = header
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.split(';');
                let tag = pieces.next()?.trim();
                let quality = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (!tag.is_empty() && tag != "*" && quality > 0.0).then_some((quality, tag))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked
            .iter()
            .find_map(|(_, tag)| Self::parse(&tag.split(['-', '_']).next()?.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_tags_find_their_language() {
        assert_eq!(Locale::negotiate("vi-VN"), Locale::Vi);
        assert_eq!(Locale::negotiate("zh_Hant_TW"), Locale::Zh);
        assert_eq!(Locale::negotiate("KO"), Locale::Ko);
    }

    #[test]
    fn unknown_languages_fall_back_to_english_and_nothing_to_korean() {
        assert_eq!(Locale::negotiate("th-TH"), Locale::En);
        assert_eq!(Locale::negotiate(""), Locale::Ko);
    }

    #[test]
    fn accept_language_prefers_the_highest_supported_weight() {
        assert_eq!(
            Locale::from_accept_language("fr;q=0.9, vi;q=0.8, en;q=0.5"),
            Some(Locale::Vi)
        );
        assert_eq!(Locale::from_accept_language("fr, de"), None);
    }
}
