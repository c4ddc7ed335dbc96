//! What the tier's own runtime costs a lookup: N sequential reads of one small object
//! through `ObjectStore::get` (a `block_on` on the tier's runtime per read, as the agent's
//! threads do) against N reads in one async loop on a runtime of the caller's (no hop), same
//! server, same client settings. Run by scripts/bench/cloud.sh:
//!   cargo run --release -p cachefs-store --example cloud_latency -- ENDPOINT BUCKET [N]
//! with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set.
use cachefs_store::remote::{CloudConfig, ObjectStore, RemoteTier, Service};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, bucket) = (&args[1], &args[2]);
    let n: u32 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(500);
    let tier = ObjectStore::new(&CloudConfig {
        service: Some(Service::S3),
        bucket: bucket.clone(),
        prefix: "latency/".into(),
        endpoint: Some(endpoint.clone()),
        path_style: true,
        timeout: Duration::from_secs(5),
        ..CloudConfig::default()
    })
    .unwrap();
    let value = vec![7u8; 2000];
    tier.set("r", "probe", &value).unwrap();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    // Warm both paths' connection pools first.
    let _ = time(&mut || assert!(tier.get("r", "probe").unwrap().is_some()));
    let through_tier = time(&mut || assert!(tier.get("r", "probe").unwrap().is_some()));

    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket(bucket)
            .root("/latency/")
            .region("us-east-1")
            .endpoint(endpoint)
            .disable_ec2_metadata(),
    )
    .unwrap();
    let op = {
        let client = reqwest::Client::builder().build().unwrap();
        let transport = opendal::HttpTransporter::new(
            opendal_http_transport_reqwest::ReqwestTransport::new(client),
        );
        let ctx = op.base_context().with_http_transport(transport);
        op.with_context(ctx)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = rt.block_on(async {
        for _ in 0..n {
            op.read("probe").await.unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            op.read("probe").await.unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    });
    println!(
        "{n} reads of a 2000-byte object: through the tier {through_tier:.0} µs each, \
         in one async loop {direct:.0} µs each: the runtime hop and the bounds cost {:.0} µs",
        through_tier - direct
    );
}
