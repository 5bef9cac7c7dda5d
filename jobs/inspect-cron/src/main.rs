//! `inspect-cron` binary: parses the arguments, starts the process
//! ([`shared::bootstrap::process_with`]; the metrics listener only with
//! `--every`, a one-shot run has nothing to be scraped) and runs the schedule.

use inspect_cron::{Cli, Schedule};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if shared::healthcheck::requested() {
        return shared::healthcheck::run().await;
    }
    let schedule = match inspect_cron::parse_args(std::env::args().skip(1))? {
        Cli::Help => {
            print!("{}", inspect_cron::USAGE);
            return Ok(());
        }
        Cli::Run(schedule) => schedule,
    };
    let serve_metrics = matches!(schedule, Schedule::Every(_));
    let (config, infra, shutdown) =
        shared::bootstrap::process_with::<inspect_cron::InspectCronConfig>(false, serve_metrics)
            .await?;
    inspect_cron::run(config, infra, schedule, shutdown).await
}
