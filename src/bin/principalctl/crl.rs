//! `principalctl crl fetch`: download the CA's CRLs, for relying parties that check revocation themselves (openssl
//! -crl_check, rustls/webpki with_crls).

use std::path::PathBuf;

use clap::Subcommand;
use principald::pki::crl::{PARTITIONS, parse_partition, partition_name};
use principald::proto::{self as pb};
use serde_json::json;

use crate::output::{self, Format, time};
use crate::rpc::Context;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write the CRLs as P.crl (DER) and all of them as crls.pem (PEM, for openssl -CRLfile) into DIR.
    Fetch {
        /// Partitions to fetch (0..f); all when none is given.
        partitions: Vec<String>,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(ctx: &Context, command: Command) -> Result<(), String> {
    let Command::Fetch { partitions, out } = command;
    let wanted: Vec<u8> = if partitions.is_empty() {
        (0..PARTITIONS).collect()
    } else {
        partitions
            .iter()
            .map(|p| parse_partition(p).ok_or_else(|| format!("invalid partition {p:?}: one hex digit, 0 to f")))
            .collect::<Result<_, _>>()?
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut client = ctx.client().await?;
    let (mut rows, mut pems, mut listed) = (Vec::new(), String::new(), Vec::new());
    for partition in wanted {
        let request = pb::GetCrlRequest { partition: partition_name(partition) };
        let crl = client.get_crl(request).await.map_err(|s| ctx.explain(s))?.into_inner();
        let file = out.join(format!("{}.crl", crl.partition));
        std::fs::write(&file, &crl.der).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        pems.push_str(&pem::encode_config(
            &pem::Pem::new("X509 CRL", crl.der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
        listed.push(json!({
            "partition": crl.partition,
            "number": crl.number,
            "entries": crl.entries,
            "this_update": time(&crl.this_update),
            "next_update": time(&crl.next_update),
            "url": crl.url,
            "file": file.display().to_string(),
        }));
        rows.push(vec![
            crl.partition,
            crl.number.to_string(),
            crl.entries.to_string(),
            time(&crl.next_update),
            crl.url,
        ]);
    }
    let bundle: PathBuf = out.join("crls.pem");
    std::fs::write(&bundle, pems).map_err(|e| format!("cannot write {}: {e}", bundle.display()))?;
    match ctx.format {
        Format::Json => output::print_json(&serde_json::Value::Array(listed)),
        Format::Table => {
            output::table(&["PARTITION", "NUMBER", "ENTRIES", "NEXT UPDATE", "URL"], &rows);
            println!("wrote {} and one P.crl per partition", bundle.display());
        }
    }
    Ok(())
}
