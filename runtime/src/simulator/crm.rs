//! The simulated CRM's data: accounts that change and get deleted over time, deterministically
//! from a seed. Pure: the clock is passed in.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

const CITIES: &[&str] = &[
    "Lyon", "Oslo", "Porto", "Turku", "Gent", "Graz", "Cork", "Brno",
];
const INDUSTRIES: &[&str] = &["Energy", "Retail", "Banking", "Media", "Health"];

/// A small, fast, seedable pseudo-random generator (SplitMix64): the same seed gives the same
/// CRM history on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// One account as the CRM stores it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    pub id: String,
    pub name: String,
    pub billing_city: String,
    pub industry: String,
    pub annual_revenue: i64,
    pub last_modified_date: String,
    pub is_deleted: bool,
}

impl Account {
    /// The record as the query API returns it.
    pub fn record(&self) -> Value {
        let mut record = serde_json::to_value(self).expect("accounts serialise");
        record["attributes"] = json!({"type": "Account", "url": format!("/services/data/v59.0/sobjects/Account/{}", self.id)});
        record
    }
}

/// Every account ever created, deleted ones included, changing tick by tick.
#[derive(Clone, Debug)]
pub struct Crm {
    accounts: BTreeMap<String, Account>,
    random: SplitMix64,
    created: u64,
}

impl Crm {
    /// `count` accounts, all modified at `now`.
    pub fn new(count: u64, seed: u64, now: jiff::Timestamp) -> Self {
        let mut crm = Crm {
            accounts: BTreeMap::new(),
            random: SplitMix64::new(seed),
            created: 0,
        };
        for _ in 0..count {
            crm.create(now);
        }
        crm
    }

    fn create(&mut self, now: jiff::Timestamp) {
        self.created += 1;
        let n = self.created;
        let account = Account {
            id: format!("001{n:012}"),
            name: format!("Account {n}"),
            billing_city: CITIES[self.random.below(CITIES.len() as u64) as usize].to_owned(),
            industry: INDUSTRIES[self.random.below(INDUSTRIES.len() as u64) as usize].to_owned(),
            annual_revenue: (self.random.below(1000) as i64 + 1) * 1000,
            last_modified_date: stamp(now),
            is_deleted: false,
        };
        self.accounts.insert(account.id.clone(), account);
    }

    /// One tick of business: `changes` accounts change city or revenue, and every tenth tick
    /// one account is deleted and one created.
    pub fn tick(&mut self, tick: u64, changes: u64, now: jiff::Timestamp) {
        let live: Vec<String> = self.live().map(|a| a.id.clone()).collect();
        if live.is_empty() {
            return;
        }
        for _ in 0..changes {
            let id = &live[self.random.below(live.len() as u64) as usize];
            let city = CITIES[self.random.below(CITIES.len() as u64) as usize];
            let revenue = (self.random.below(1000) as i64 + 1) * 1000;
            let account = self.accounts.get_mut(id).expect("a live account exists");
            if self.random.below(2) == 0 {
                account.billing_city = city.to_owned();
            } else {
                account.annual_revenue = revenue;
            }
            account.last_modified_date = stamp(now);
        }
        if tick % 10 == 9 {
            let id = live[self.random.below(live.len() as u64) as usize].clone();
            let account = self.accounts.get_mut(&id).expect("a live account exists");
            account.is_deleted = true;
            account.last_modified_date = stamp(now);
            self.create(now);
        }
    }

    /// Accounts not deleted, in id order.
    pub fn live(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values().filter(|a| !a.is_deleted)
    }

    /// Accounts (deleted ones too, when `all`) modified after `since`, in id order.
    pub fn query(&self, all: bool, since: Option<&str>) -> Vec<&Account> {
        self.accounts
            .values()
            .filter(|a| all || !a.is_deleted)
            .filter(|a| since.is_none_or(|since| a.last_modified_date.as_str() > since))
            .collect()
    }
}

/// A CRM timestamp: RFC 3339 with milliseconds and `Z`, so text order is time order.
pub fn stamp(time: jiff::Timestamp) -> String {
    format!("{time:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let run = |seed| {
            let mut crm = Crm::new(50, seed, at(0));
            for tick in 0..30 {
                crm.tick(tick, 5, at(tick as i64 + 1));
            }
            crm.query(true, None)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn ticks_change_delete_and_create_accounts() {
        let mut crm = Crm::new(20, 1, at(0));
        for tick in 0..10 {
            crm.tick(tick, 3, at(tick as i64 + 1));
        }
        assert_eq!(crm.live().count(), 20, "one deleted, one created");
        assert_eq!(crm.query(true, None).len(), 21);
        let deleted: Vec<_> = crm
            .query(true, None)
            .into_iter()
            .filter(|a| a.is_deleted)
            .collect();
        assert_eq!(deleted.len(), 1);
        let recent = crm.query(true, Some(&stamp(at(5))));
        assert!(
            !recent.is_empty() && recent.len() < 21,
            "only what changed after the cursor"
        );
    }

    #[test]
    fn stamps_sort_as_times() {
        assert!(stamp(at(1)) < stamp(at(2)));
        assert!(stamp(at(9)) < stamp(at(10)));
        assert_eq!(stamp(at(0)), "2027-01-15T08:00:00.000Z");
    }
}
