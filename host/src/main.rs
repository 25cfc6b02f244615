use clap::Parser;

fn main() {
    let cli = kimberlite::cli::Cli::parse();
    let default_level = match cli.command {
        kimberlite::cli::Command::Start { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = runtime.block_on(kimberlite::cli::run(cli)) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
