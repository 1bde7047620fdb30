//! The font that plot text is drawn with. plotters' ab_glyph backend draws only fonts registered at
//! run time: the first of $ILR_FONT and a list of common system TrueType fonts is registered as
//! "sans-serif". With none (or ILR_FONT=none), plots are drawn without text, with a warning.

use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Register a font once; whether plots can draw text.
pub fn text_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let env = std::env::var("ILR_FONT").ok();
        if env.as_deref() == Some("none") {
            eprintln!("note: ILR_FONT=none: plots are drawn without text");
            return false;
        }
        for path in env.iter().map(String::as_str).chain(CANDIDATES.iter().copied()) {
            let Ok(bytes) = std::fs::read(path) else { continue };
            // plotters keeps a &'static reference to the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        eprintln!(
            "warning: no TrueType font found (tried $ILR_FONT and {} system paths); plots are drawn without \
             text. Install one (Debian: apt-get install fonts-dejavu-core) or set ILR_FONT=/path/to/font.ttf",
            CANDIDATES.len()
        );
        false
    })
}
