//! `grantd import`: reads records, sends them in batches over one ImportGrants stream,
//! and reports by line what was rejected.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::{
    auth0,
    jsonl::{self, BadLine},
    progress::Progress,
};
use crate::{
    api::pb,
    config::{ImportArgs, ImportFormat},
};

/// Batches sent ahead of the server's progress.
const SEND_AHEAD: usize = 2;

/// One record read, with where it came from (`line 12`, `entry 3`).
struct Read {
    place: String,
    record: Result<Option<pb::BulkRecord>, BadLine>,
    /// How far into the input this is, in bytes, when known.
    offset: Option<u64>,
}

/// Where the records come from: the lines of a file (or standard input), or an Auth0
/// answer read whole.
enum Source {
    Lines { lines: tokio::io::Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>, number: u64, offset: u64 },
    Listed(std::vec::IntoIter<Read>),
}

impl Source {
    async fn open(args: &ImportArgs) -> anyhow::Result<(Self, Option<u64>)> {
        let path = &args.file;
        let (input, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if path == Path::new("-") {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {}", path.display()))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            (Box::new(file), size)
        };
        Ok(match args.format {
            ImportFormat::Jsonl => (Source::Lines { lines: BufReader::new(input).lines(), number: 0, offset: 0 }, size),
            ImportFormat::Auth0 => {
                let mut text = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(input), &mut text)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let (organization, user) = (args.organization.as_deref(), args.user.as_deref());
                let (Some(organization), Some(user)) = (organization, user) else {
                    anyhow::bail!("--from auth0 needs --organization and --user");
                };
                let reads: Vec<Read> = auth0::lines(&text, organization, user)?
                    .into_iter()
                    .enumerate()
                    .map(|(index, line)| Read {
                        place: format!("record {index}"),
                        record: jsonl::record(line),
                        offset: None,
                    })
                    .collect();
                (Source::Listed(reads.into_iter()), None)
            }
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<Read>> {
        match self {
            Source::Listed(reads) => Ok(reads.next()),
            Source::Lines { lines, number, offset } => {
                let Some(text) = lines.next_line().await.context("cannot read the input")? else { return Ok(None) };
                *number += 1;
                *offset += text.len() as u64 + 1;
                Ok(Some(Read { place: format!("line {number}"), record: jsonl::parse(&text), offset: Some(*offset) }))
            }
        }
    }
}

/// A batch being read: its records, where each came from, and its bad lines.
#[derive(Default)]
struct Batch {
    records: Vec<pb::BulkRecord>,
    places: Vec<String>,
    bad: Vec<(String, BadLine)>,
}

/// What the run did apart from the server's answer.
#[derive(Default)]
struct Tally {
    /// The place of each record sent, by its position in the stream.
    sent: Vec<String>,
    /// Lines that could not be read, and the good records their batches held.
    bad: Vec<(String, BadLine)>,
    unsent: u64,
    last_place: Option<String>,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut client = super::bulk_client(&args.connect, &args.token).await?;
    let (mut source, size) = Source::open(&args).await?;
    let (requests, receiver) = mpsc::channel(SEND_AHEAD);
    let call = tokio::spawn(async move { client.import_grants(ReceiverStream::new(receiver)).await });
    let mut progress = Progress::new(if args.dry_run { "import (dry run)" } else { "import" }, size);
    let mut tally = Tally::default();
    let mut batch = Batch::default();
    let mut interrupted = false;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let read = tokio::select! {
            biased;
            _ = &mut stop => {
                interrupted = true;
                break;
            }
            read = source.next() => read?,
        };
        let Some(read) = read else { break };
        tally.last_place = Some(read.place.clone());
        match read.record {
            Ok(Some(record)) => {
                batch.records.push(record);
                batch.places.push(read.place);
            }
            Ok(None) => continue,
            Err(bad) => batch.bad.push((read.place, bad)),
        }
        if batch.records.len() + batch.bad.len() >= args.batch_size as usize {
            let sent = send(&requests, std::mem::take(&mut batch), args.dry_run, &mut tally).await;
            progress.advance(sent, read.offset);
            if requests.is_closed() {
                break;
            }
        }
    }
    // Ctrl-C lands between batches: a batch read in part is not sent.
    if !interrupted {
        let sent = send(&requests, batch, args.dry_run, &mut tally).await;
        progress.advance(sent, size);
    }
    drop(requests);
    progress.finish();
    let answer = call.await.context("the import task failed")?;
    report(&args, answer.map(tonic::Response::into_inner), &tally, interrupted)
}

/// Sends the batch, unless a line of it could not be read; answers how many records went.
async fn send(requests: &mpsc::Sender<pb::ImportGrantsRequest>, batch: Batch, dry_run: bool, tally: &mut Tally) -> u64 {
    if !batch.bad.is_empty() {
        tally.unsent += batch.records.len() as u64;
        tally.bad.extend(batch.bad);
        return 0;
    }
    if batch.records.is_empty() {
        return 0;
    }
    let count = batch.records.len() as u64;
    // A closed stream means the server answered already (an error): the report says so.
    if requests.send(pb::ImportGrantsRequest { records: batch.records, dry_run }).await.is_ok() {
        tally.sent.extend(batch.places);
    }
    count
}

fn report(
    args: &ImportArgs,
    answer: Result<pb::ImportGrantsResponse, tonic::Status>,
    tally: &Tally,
    interrupted: bool,
) -> anyhow::Result<ExitCode> {
    let file = args.file.display();
    let resume = format!(
        "run the same command again to finish: what this run imported counts as already held{}",
        if args.dry_run { " (this was a dry run: nothing was written)" } else { "" }
    );
    let answer = match answer {
        Ok(answer) => answer,
        Err(status) => {
            let place = tally.last_place.as_deref().unwrap_or("the start");
            eprintln!("error: the import stopped after {place}: {} ({:?})", status.message(), status.code());
            // A refusal (token, rights, a malformed stream) is the same on the next run.
            let refused =
                matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument);
            if !refused {
                eprintln!("{resume}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let verb = if args.dry_run { "would be added" } else { "added" };
    println!(
        "{file}: {} {verb}, {} already held, {} rejected, {} not written (revision {})",
        answer.added,
        answer.already_held,
        answer.rejected + tally.bad.len() as u64,
        answer.not_written + tally.unsent,
        answer.revision
    );
    for (place, bad) in &tally.bad {
        println!("{place}: {bad} (nothing of its batch was sent)");
    }
    for rejection in &answer.rejections {
        let place = usize::try_from(rejection.position).ok().and_then(|p| tally.sent.get(p));
        let place = place.map_or_else(|| format!("record {}", rejection.position), Clone::clone);
        println!("{place}: {}: {} (nothing of its batch was written)", rejection.field, rejection.reason);
    }
    if interrupted {
        eprintln!("stopped by Ctrl-C after {}; {resume}", tally.last_place.as_deref().unwrap_or("the start"));
        return Ok(ExitCode::from(130));
    }
    let clean = answer.rejected == 0 && tally.bad.is_empty();
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
