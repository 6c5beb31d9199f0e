//! The retrieval deal policy: who to ask, at what price, within what budget. Today's providers
//! quote a price per GiB (free by default); a paid protocol would change how a quote is
//! obtained and settled, not how candidates are chosen and ranked.

use std::sync::Arc;

use serde::Serialize;

use super::discovery::Candidate;
use super::provider::{Provider, ProviderBook};
use crate::config::ColdConfig;

/// Bytes in a GiB, the unit of prices.
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Limits on what retrievals may cost.
#[derive(Clone, Copy, Debug)]
pub struct DealPolicy {
    /// Quotes above this (FIL per GiB) are declined.
    pub max_price_per_gib: f64,
    /// Most one retrieval may spend (FIL).
    pub request_ceiling: f64,
    /// Most all retrievals may spend per UTC day (FIL).
    pub daily_budget: f64,
}

/// A candidate the policy turned down, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Declined {
    /// The provider's URL.
    pub url: String,
    /// Why.
    pub reason: String,
}

/// The providers to ask, best first, with the ones declined.
pub struct Plan {
    /// Accepted providers in the order to ask them.
    pub ranked: Vec<Arc<Provider>>,
    /// Declined candidates.
    pub declined: Vec<Declined>,
}

impl DealPolicy {
    /// The policy configured in `[cold]`.
    pub fn new(c: &ColdConfig) -> Self {
        Self {
            max_price_per_gib: c.max_price_per_gib,
            request_ceiling: c.request_ceiling,
            daily_budget: c.daily_budget,
        }
    }

    /// What a retrieval from a provider asking `price` per GiB may still spend (FIL), `None`
    /// when free.
    pub fn allowance(&self, price: f64, spent_today: f64) -> Option<f64> {
        (price > 0.0).then(|| {
            self.request_ceiling
                .min(self.daily_budget - spent_today)
                .max(0.0)
        })
    }

    /// The cost of `bytes` at `price` per GiB.
    pub fn cost(price: f64, bytes: u64) -> f64 {
        price * bytes as f64 / GIB
    }

    /// Quotes, filters and ranks the candidates.
    pub fn plan(&self, candidates: &[Candidate], book: &ProviderBook) -> Plan {
        let spent = book.spend().today;
        let mut ranked: Vec<(f64, Arc<Provider>)> = Vec::new();
        let mut declined = Vec::new();
        for c in candidates {
            let quote = c.price_per_gib;
            let reason = if !(quote.is_finite() && quote >= 0.0) {
                Some(format!("invalid quote {quote}"))
            } else if quote > self.max_price_per_gib {
                Some(format!(
                    "quote {quote} FIL/GiB is above max_price_per_gib {}",
                    self.max_price_per_gib
                ))
            } else if quote > 0.0 && self.allowance(quote, spent) == Some(0.0) {
                Some(format!(
                    "paid provider: daily budget {} FIL spent ({spent:.6} today) or request ceiling 0",
                    self.daily_budget
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                tracing::debug!(provider = %c.url, %reason, "retrieval deal declined");
                declined.push(Declined {
                    url: c.url.clone(),
                    reason,
                });
                continue;
            }
            let p = book.provider(c);
            // Cheaper wins at equal score; a free provider is never outranked by price alone.
            let rank = p.stats().score() / (1.0 + quote);
            ranked.push((rank, p));
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        if tracing::enabled!(tracing::Level::DEBUG) {
            let order: Vec<String> = ranked
                .iter()
                .map(|(r, p)| format!("{} ({r:.3})", p.label()))
                .collect();
            tracing::debug!(
                ?order,
                declined = declined.len(),
                "retrieval deal: providers ranked"
            );
        }
        Plan {
            ranked: ranked.into_iter().map(|(_, p)| p).collect(),
            declined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::cold::discovery::Origin;
    use crate::tiers::cold::provider::Failure;

    fn cand(url: &str, price: f64) -> Candidate {
        Candidate {
            url: url.into(),
            label: url.into(),
            price_per_gib: price,
            origin: Origin::Static,
            peer_id: None,
            verified_deal: false,
            fast_retrieval: false,
        }
    }

    #[test]
    fn quotes_ceilings_and_budget_decide_who_is_asked() {
        let book = ProviderBook::load(None, 4).unwrap();
        let policy = DealPolicy {
            max_price_per_gib: 1.0,
            request_ceiling: 0.1,
            daily_budget: 0.5,
        };
        let cands = [
            cand("http://free", 0.0),
            cand("http://cheap", 0.2),
            cand("http://dear", 2.0),
        ];
        let plan = policy.plan(&cands, &book);
        let urls: Vec<&str> = plan.ranked.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(urls, ["http://free", "http://cheap"]);
        assert_eq!(plan.declined.len(), 1);
        assert!(plan.declined[0].reason.contains("max_price_per_gib"));
        // A paid retrieval may spend the smaller of the ceiling and what is left today.
        assert_eq!(policy.allowance(0.2, 0.0), Some(0.1));
        assert_eq!(policy.allowance(0.2, 0.45), Some(0.5 - 0.45));
        assert_eq!(policy.allowance(0.0, 10.0), None);
        book.charge(0.5);
        let plan = policy.plan(&cands, &book);
        assert_eq!(plan.ranked.len(), 1, "budget spent: only the free provider");
        assert_eq!(DealPolicy::cost(1.0, 1 << 30), 1.0);
    }

    #[test]
    fn observed_scores_rank_providers() {
        let book = ProviderBook::load(None, 4).unwrap();
        let policy = DealPolicy {
            max_price_per_gib: 1.0,
            request_ceiling: 0.1,
            daily_budget: 0.0,
        };
        let cands = [cand("http://a", 0.0), cand("http://b", 0.0)];
        book.provider(&cands[0])
            .update(|s| s.failure(&Failure::Timeout("slow".into())));
        let plan = policy.plan(&cands, &book);
        assert_eq!(plan.ranked[0].url, "http://b");
    }
}
