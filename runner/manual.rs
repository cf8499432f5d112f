//! Documentation bytejail prints about itself: shell completion scripts (`clap_complete`) and
//! man pages (`clap_mangen`), both made from the same clap definition as `--help`.

use bytejail::Error;
use clap::{Args, CommandFactory};

use crate::cli::{invalid, write_stdout, Cli, Completion};
use crate::suggest::did_you_mean;

/// `bytejail completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL", ignore_case = true)]
    pub shell: clap_complete::Shell,
}

/// `bytejail man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (bytejail-COMMAND(1)); without it, bytejail(1).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// `bytejail completions SHELL`: the completion script on stdout.
pub fn completions(args: CompletionsArgs) -> Result<Completion, Error> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "bytejail", &mut script);
    write_stdout(&script)?;
    Ok(Completion::Done)
}

/// `bytejail man [COMMAND]`: the man page in roff on stdout.
pub fn man(args: ManArgs) -> Result<Completion, Error> {
    let cli = Cli::command();
    let page = match &args.command {
        None => cli,
        Some(name) => {
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|sub| sub.get_name().to_string())
                .collect();
            let Some(sub) = cli.find_subcommand(name) else {
                return Err(invalid(format!(
                    "no command `{name}`; the commands are {}{}",
                    names.join(", "),
                    did_you_mean(name, &names)
                ))
                .into());
            };
            // bytejail-run(1), as git names its pages. clap takes a static name (without its
            // `string` feature); one small string for a process that prints and exits.
            let page_name: &'static str =
                Box::leak(format!("bytejail-{}", sub.get_name()).into_boxed_str());
            sub.clone()
                .name(page_name)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|source| Error::Runner {
            what: "rendering the man page",
            source,
        })?;
    write_stdout(&roff)?;
    Ok(Completion::Done)
}
