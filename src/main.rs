use clap::Parser;

fn main() {
    probescope::tune_allocator();
    std::process::exit(probescope::cli::main_with(probescope::cli::Cli::parse()));
}
