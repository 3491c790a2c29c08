//! Prices from the AWS Price List API (`--refresh-prices`), with aws-sdk-pricing: for each
//! instance type of the cluster, the on-demand Linux price of EC2 (shared tenancy, no
//! pre-installed software) and the EMR uplift, in the cluster's region. They replace the shipped
//! table's for this run; the pipeline's own `engines.emr.prices` still win.

use std::collections::BTreeMap;

use aws_sdk_pricing::error::DisplayErrorContext;
use aws_sdk_pricing::types::{Filter, FilterType};
use dagrun_core::emr::InstancePrice;

/// The Price List API answers in us-east-1 (also eu-central-1 and ap-south-1).
const API_REGION: &str = "us-east-1";

/// A Price List client with the standard credential chain; the endpoint may be overridden with
/// `AWS_ENDPOINT_URL_PRICING` or `AWS_ENDPOINT_URL` (the tests point it at their server).
async fn client() -> aws_sdk_pricing::Client {
    let loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(API_REGION));
    let sdk = crate::load_sdk_config(loader).await;
    aws_sdk_pricing::Client::new(&sdk)
}

/// The hourly USD price in one PriceList document (a JSON string): its on-demand term's rate.
fn hourly(document: &str) -> Option<f64> {
    let doc: serde_json::Value = serde_json::from_str(document).ok()?;
    let terms = doc.get("terms")?.get("OnDemand")?.as_object()?;
    terms.values().find_map(|term| {
        term.get("priceDimensions")?.as_object()?.values().find_map(|d| {
            let usd = d.get("pricePerUnit")?.get("USD")?.as_str()?.parse::<f64>().ok()?;
            (usd > 0.0 && d.get("unit").and_then(|u| u.as_str()).is_none_or(|u| u.starts_with("Hr"))).then_some(usd)
        })
    })
}

async fn price(
    client: &aws_sdk_pricing::Client,
    service: &str,
    filters: &[(&str, &str)],
) -> Result<Option<f64>, String> {
    let mut call = client.get_products().service_code(service).max_results(10);
    for (field, value) in filters {
        let filter = Filter::builder()
            .r#type(FilterType::TermMatch)
            .field(*field)
            .value(*value)
            .build()
            .map_err(|e| e.to_string())?;
        call = call.filters(filter);
    }
    let out = call.send().await.map_err(|e| format!("{service}: {}", DisplayErrorContext(&e)))?;
    Ok(out.price_list().iter().find_map(|d| hourly(d)))
}

/// The prices of `types` in `region`; a type the API does not price is left out.
pub async fn refresh(types: &[String], region: &str) -> Result<BTreeMap<String, InstancePrice>, String> {
    let client = client().await;
    let mut out = BTreeMap::new();
    for t in types {
        let ec2 = price(
            &client,
            "AmazonEC2",
            &[
                ("instanceType", t),
                ("regionCode", region),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
            ],
        )
        .await?;
        let emr =
            price(&client, "ElasticMapReduce", &[("instanceType", t), ("regionCode", region), ("softwareType", "EMR")])
                .await?;
        if let (Some(ec2), Some(emr)) = (ec2, emr) {
            out.insert(t.clone(), InstancePrice { ec2, emr });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::hourly;

    #[test]
    fn the_on_demand_hourly_rate_is_read_from_a_price_list_document() {
        let doc = r#"{"product": {"attributes": {"instanceType": "m5.xlarge"}},
            "terms": {"OnDemand": {"ABC.JRTCKXETXF": {"priceDimensions": {"ABC.JRTCKXETXF.6YS6EN2CT7":
            {"unit": "Hrs", "pricePerUnit": {"USD": "0.1920000000"}}}}}}}"#;
        assert_eq!(hourly(doc), Some(0.192));
        assert_eq!(hourly(r#"{"terms": {}}"#), None);
    }
}
