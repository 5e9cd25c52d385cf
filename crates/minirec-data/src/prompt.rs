//! The prompt of RISER's Appendix A: an instruction, the history as quoted titles, a response header; the
//! response is the quoted next title and a newline. The prompt always ends in a newline, so the response's
//! tokens never merge with the prompt's last token: the prompt and the response can be tokenised separately
//! and concatenated, which is the convention the trie relies on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptTemplate {
    pub domain: String,
    pub instruction: String,
    pub history_intro: String,
    pub response_header: String,
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self::preset("generic").expect("generic preset exists")
    }
}

impl PromptTemplate {
    pub const PRESETS: [&'static str; 5] = ["generic", "games", "toys", "books", "industrial"];

    /// A domain's wording, following RISER Table 3.
    pub fn preset(domain: &str) -> Option<Self> {
        let (things, thing, verb) = match domain {
            "generic" => ("items", "item", "interacted with"),
            "games" => ("video games", "video game", "played"),
            "toys" => ("toys", "toy", "bought"),
            "books" => ("books", "book", "read"),
            "industrial" => (
                "industrial and scientific products",
                "industrial and scientific product",
                "bought",
            ),
            _ => return None,
        };
        Some(PromptTemplate {
            domain: domain.to_string(),
            instruction: format!(
                "Given a list of {things} the user recently enjoyed, please write a new {thing} that the user might also like."
            ),
            history_intro: format!("The user has {verb} the following {things} before:"),
            response_header: "### Response:".into(),
        })
    }

    /// The prompt for a history of titles, oldest first.
    pub fn render<'a>(&self, history: impl IntoIterator<Item = &'a str>) -> String {
        let mut s = String::with_capacity(256);
        s.push_str(&self.instruction);
        s.push('\n');
        s.push_str(&self.history_intro);
        for t in history {
            s.push_str(" \"");
            s.push_str(t);
            s.push('"');
        }
        s.push('\n');
        s.push_str(&self.response_header);
        s.push('\n');
        s
    }

    /// The response text the model is trained to generate for a title.
    pub fn response(&self, title: &str) -> String {
        format!("\"{title}\"\n")
    }

    /// The title inside a generated response, if it has the response's shape.
    pub fn parse_response<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.strip_suffix('\n')
            .unwrap_or(text)
            .strip_prefix('"')?
            .strip_suffix('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_prompt_matches_the_reference_harness() {
        // shared/bench/hf_constrained_beam.py builds exactly this string.
        let p = PromptTemplate::default().render(["A", "B c"]);
        assert_eq!(
            p,
            "Given a list of items the user recently enjoyed, please write a new item that the user might also like.\n\
             The user has interacted with the following items before: \"A\" \"B c\"\n### Response:\n"
        );
    }

    #[test]
    fn games_preset_matches_riser_table_3() {
        let t = PromptTemplate::preset("games").unwrap();
        assert_eq!(
            t.instruction,
            "Given a list of video games the user recently enjoyed, please write a new video game that the user might also like."
        );
        assert_eq!(
            t.history_intro,
            "The user has played the following video games before:"
        );
        assert!(PromptTemplate::preset("nope").is_none());
    }

    #[test]
    fn response_round_trips() {
        let t = PromptTemplate::default();
        let r = t.response("Acme \"Pro\" Drill");
        assert_eq!(r, "\"Acme \"Pro\" Drill\"\n");
        assert_eq!(t.parse_response(&r), Some("Acme \"Pro\" Drill"));
        assert_eq!(t.parse_response("no quotes"), None);
    }
}
