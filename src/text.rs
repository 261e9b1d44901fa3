//! Text that people will read: names and error messages. It must not hold control characters
//! (a NUL is also refused by PostgreSQL, which would turn it into a server error) nor the
//! invisible marks that reorder what follows them, so that text on a page cannot pretend to
//! read otherwise than it does ("Trojan Source").

use crate::Error;

/// Whether `c` reorders the text around it: the bidirectional embeddings, overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069).
fn reorders(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a one-line text (a batch, item or user name): no control character at all.
pub fn check_line(what: &str, text: &str) -> Result<(), Error> {
    check(what, text, |c| c.is_control())
}

/// Checks a message (an item's error), which may span lines: tabs and line feeds are kept,
/// every other control character is refused.
pub fn check_message(what: &str, text: &str) -> Result<(), Error> {
    check(what, text, |c| c.is_control() && c != '\n' && c != '\t')
}

fn check(what: &str, text: &str, refused: impl Fn(char) -> bool) -> Result<(), Error> {
    match text.chars().find(|&c| refused(c) || reorders(c)) {
        None => Ok(()),
        Some(c) => Err(Error::Invalid(format!(
            "{what} must not hold control or text-direction characters (found U+{:04X})",
            u32::from(c)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_in_any_script_passes() {
        for ok in ["photo-001.jpg", "Überweisung 2026", "صورة.jpg", "写真 1", "a b\u{00A0}c", "🙂"] {
            assert!(check_line("name", ok).is_ok(), "{ok:?}");
        }
        assert!(check_message("error", "line one\n\tline two").is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\0b", "a\nb", "a\rb", "\u{1b}[31m", "a\u{7f}", "a\u{85}b"] {
            let err = check_line("name", bad).unwrap_err();
            assert!(err.to_string().starts_with("name must not hold"), "{err}");
        }
        assert!(check_message("error", "a\0b").is_err());
        assert!(check_message("error", "a\rb").is_err());
    }

    #[test]
    fn direction_overrides_are_refused_in_both() {
        for bad in ["invoice\u{202E}fdp.exe", "a\u{2066}b\u{2069}", "\u{202A}x"] {
            assert!(check_line("name", bad).is_err(), "{bad:?}");
            assert!(check_message("error", bad).is_err(), "{bad:?}");
        }
    }
}
