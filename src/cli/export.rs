//! `grantd export`: one ExportGrants snapshot written as JSON lines to standard output,
//! continued from its cursor when the connection breaks.

use std::{
    io::{BufWriter, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use tonic::Code;

use super::{
    jsonl::{ExportHeader, Line},
    progress::Progress,
};
use crate::{api::pb, config::ExportArgs};

/// Broken connections an export continues after before giving up.
const RESUMES: u32 = 5;

pub async fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut client = super::bulk_client(&args.connect, &args.token).await?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut progress = Progress::new("export", None);
    let mut cursor = String::new();
    let mut header_written = false;
    let mut resumes = 0;
    loop {
        let request = pb::ExportGrantsRequest {
            organization_id: args.organization.clone().unwrap_or_default(),
            cursor: cursor.clone(),
        };
        let outcome = async {
            let mut stream = client.export_grants(request).await?.into_inner();
            while let Some(message) = stream.message().await? {
                if !header_written {
                    let header =
                        ExportHeader { revision: message.revision, organization_id: args.organization.clone() };
                    write_line(&mut out, &Line::Export(header))
                        .map_err(|err| tonic::Status::internal(err.to_string()))?;
                    header_written = true;
                }
                let count = message.records.len() as u64;
                for line in message.records.into_iter().filter_map(Line::from_record) {
                    write_line(&mut out, &line).map_err(|err| tonic::Status::internal(err.to_string()))?;
                }
                cursor = message.cursor;
                progress.advance(count, None);
            }
            Ok::<_, tonic::Status>(())
        }
        .await;
        match outcome {
            Ok(()) => break,
            Err(status) if resumable(&status) && resumes < RESUMES => {
                resumes += 1;
                eprintln!("export: the stream broke ({}); continuing from its cursor", status.message());
                tokio::time::sleep(Duration::from_millis(200 * u64::from(resumes))).await;
            }
            Err(status) => {
                out.flush().ok();
                progress.finish();
                eprintln!("error: the export failed: {} ({:?})", status.message(), status.code());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    out.flush().context("cannot write the export")?;
    progress.finish();
    Ok(ExitCode::SUCCESS)
}

/// A connection that broke; the cursor continues the same snapshot.
fn resumable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

fn write_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}
