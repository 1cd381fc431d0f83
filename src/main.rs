use clap::Parser;

fn main() {
    probescope::tune_allocator();
    probescope::tune_threads();
    std::process::exit(probescope::cli::main_with(probescope::cli::Cli::parse()));
}
