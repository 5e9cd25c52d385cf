use indicatif::{ProgressBar, ProgressStyle};

/// [`bar`] when `show`, else a hidden bar (for library loops whose caller decides).
pub fn bar_if(show: bool, len: u64, msg: &'static str) -> ProgressBar {
    if show {
        bar(len, msg)
    } else {
        ProgressBar::hidden()
    }
}

/// A counting progress bar on stderr (drawn only when stderr is a terminal).
pub fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}
