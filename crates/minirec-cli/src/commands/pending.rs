use clap::Args;

/// Stages that later releases fill in accept any arguments and say so plainly.
#[derive(Args)]
pub struct PendingArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

pub fn run(command: &str, what: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "`minirec {command}` is not available in this version yet: it needs {what}, which is still being built \
         (see the README's roadmap)"
    )
}
