//! The simulator's datasets beyond the seed's chain (DESIGN.md section 13):
//! org teams (one per team, every fifth answer also its club's org), venues and their details, clubs per sport.
//! Generated from a random stream of their own, so the seed's lists are the
//! same bytes for the same seed whether or not these exist; served at the
//! real API's paths; churned per dataset.
//!
//! A child of `data`: it reads the teams and the match venues there.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Dataset, PLACES, SPORTS, Scale};
use crate::model::dataset::DatasetId;
use crate::rng::Rng;

/// Venues and clubs per sport at each scale (org teams follow the teams).
fn sizes(scale: Scale) -> (usize, usize) {
    match scale {
        Scale::Small => (40, 30),
        Scale::Norway => (1_500, 1_000),
        Scale::TenX => (15_000, 10_000),
    }
}

/// The first venue id: the match venues (`venueUnitId` 70,000 + 0..8) are
/// among the venues.
const FIRST_VENUE: i64 = 70_000;
const SURFACES: [&str; 4] = ["Kunstgress", "Parkett", "Is", "Kunstis"];

#[derive(Debug, Clone)]
pub(super) struct SimVenue {
    id: i64,
    name: String,
    city: &'static str,
    /// Bumped by a change the venue list shows (and its details too).
    revision: u32,
    /// Bumped by a change only its details show.
    detail_revision: u32,
}

#[derive(Debug, Clone)]
pub(super) struct SimClub {
    id: i64,
    sport_id: i64,
    name: String,
    revision: u32,
}

/// The datasets' own state.
#[derive(Debug, Clone)]
pub(super) struct Extras {
    rng: Rng,
    /// Team id → its org's revision (absent: 0).
    org_revisions: BTreeMap<i64, u32>,
    venues: BTreeMap<i64, SimVenue>,
    clubs: BTreeMap<i64, SimClub>,
    next_venue: i64,
    next_club: i64,
}

impl Extras {
    pub(super) fn generate(scale: Scale, seed: u64) -> Extras {
        let (venue_count, clubs_per_sport) = sizes(scale);
        let mut extras = Extras {
            rng: Rng::new(seed ^ 0xDA7A_5E75),
            org_revisions: BTreeMap::new(),
            venues: BTreeMap::new(),
            clubs: BTreeMap::new(),
            next_venue: FIRST_VENUE,
            next_club: 1_000_000,
        };
        for _ in 0..venue_count {
            extras.add_venue();
        }
        for (sport_id, _) in SPORTS {
            for _ in 0..clubs_per_sport {
                extras.add_club(sport_id);
            }
        }
        extras
    }

    fn add_venue(&mut self) -> i64 {
        let id = self.next_venue;
        self.next_venue += 1;
        let i = (id - FIRST_VENUE) as usize;
        let city = PLACES[i % PLACES.len()];
        let name = format!(
            "{city} {} {}",
            ["Arena", "Hall", "Stadion"][i % 3],
            i / PLACES.len() + 1
        );
        self.venues.insert(
            id,
            SimVenue {
                id,
                name,
                city,
                revision: 0,
                detail_revision: 0,
            },
        );
        id
    }

    fn add_club(&mut self, sport_id: i64) -> i64 {
        let id = self.next_club;
        self.next_club += 1;
        let place = PLACES[self.rng.below(PLACES.len() as u64) as usize];
        self.clubs.insert(
            id,
            SimClub {
                id,
                sport_id,
                name: format!("{place} Idrettslag {}", id % 10_000),
                revision: 0,
            },
        );
        id
    }
}

impl Dataset {
    /// `GET /api/v1/org/teams?orgId=`: the team's org, one object.
    pub fn org_body(&self, team_id: i64) -> Option<Value> {
        let team = self.teams.get(&team_id)?;
        let revision = self
            .extras
            .org_revisions
            .get(&team_id)
            .copied()
            .unwrap_or(0);
        let org = json!({
            "orgId": team.id,
            "orgName": team.name,
            "orgTypeId": 6,
            "parentOrgId": team.club_id,
            "sportId": team.sport_id,
            "members": 15 + (team.id % 20) + i64::from(revision),
            "revision": revision,
        });
        // Every fifth team's answer is a list: its org and its club's (an
        // org answered under several teams' calls).
        if team.id % 5 != 0 {
            return Some(org);
        }
        let club = json!({
            "orgId": team.club_id,
            "orgName": format!("{} (klubb)", team.name),
            "orgTypeId": 5,
            "sportId": team.sport_id,
        });
        Some(json!([org, club]))
    }

    fn venue_json(&self, v: &SimVenue) -> Value {
        json!({
            "venueId": v.id,
            "venueName": v.name,
            "city": v.city,
            "revision": v.revision,
        })
    }

    /// `GET /api/v1/venues/allvenues`.
    pub fn venues_body(&self) -> Value {
        let list: Vec<Value> = self
            .extras
            .venues
            .values()
            .map(|v| self.venue_json(v))
            .collect();
        json!({ "venues": list })
    }

    /// `GET /api/v1/ta/venue/?venueId=`: one venue's details.
    pub fn venue_body(&self, venue_id: i64) -> Option<Value> {
        let v = self.extras.venues.get(&venue_id)?;
        let i = v.id - FIRST_VENUE;
        Some(json!({
            "venueId": v.id,
            "venueName": v.name,
            "address": format!("Idrettsveien {}", i % 200 + 1),
            "postalCode": format!("{:04}", 1000 + i % 8000),
            "city": v.city,
            "latitude": 58.0 + (i % 700) as f64 / 100.0,
            "longitude": 5.0 + (i % 900) as f64 / 100.0,
            "surface": SURFACES[(i as usize + v.detail_revision as usize) % SURFACES.len()],
            "revision": v.revision,
            "detailRevision": v.detail_revision,
        }))
    }

    fn club_json(&self, c: &SimClub) -> Value {
        json!({
            "clubId": c.id,
            "clubName": c.name,
            "sportId": c.sport_id,
            "revision": c.revision,
        })
    }

    /// `GET /api/v1/org/clubsbysport/{sportId}/`.
    pub fn clubs_body(&self, sport_id: i64) -> Value {
        let list: Vec<Value> = self
            .extras
            .clubs
            .values()
            .filter(|c| c.sport_id == sport_id)
            .map(|c| self.club_json(c))
            .collect();
        json!({ "clubs": list })
    }

    /// Each dataset's records as a client that asked all of it holds
    /// them, id → canonical JSON; org teams of the teams it mirrors.
    pub(super) fn data_view(
        &self,
        teams: &std::collections::BTreeSet<i64>,
    ) -> BTreeMap<&'static str, BTreeMap<i64, String>> {
        let mut view = BTreeMap::new();
        for dataset in DatasetId::ALL {
            let records: BTreeMap<i64, String> = match dataset {
                DatasetId::OrgTeams => {
                    // Each org once: its first answer, in team order.
                    let mut orgs = BTreeMap::new();
                    for body in teams.iter().filter_map(|t| self.org_body(*t)) {
                        let records = match body {
                            Value::Array(items) => items,
                            one => vec![one],
                        };
                        for org in records {
                            if let Some(id) = org["orgId"].as_i64() {
                                orgs.entry(id).or_insert_with(|| org.to_string());
                            }
                        }
                    }
                    orgs
                }
                DatasetId::Venues => self
                    .extras
                    .venues
                    .values()
                    .map(|v| (v.id, self.venue_json(v).to_string()))
                    .collect(),
                DatasetId::VenueDetails => self
                    .extras
                    .venues
                    .keys()
                    .filter_map(|id| Some((*id, self.venue_body(*id)?.to_string())))
                    .collect(),
                DatasetId::Clubs => self
                    .extras
                    .clubs
                    .values()
                    .map(|c| (c.id, self.club_json(c).to_string()))
                    .collect(),
            };
            view.insert(dataset.name(), records);
        }
        view
    }

    /// A dataset's records as a client that asked all of it holds them,
    /// id → JSON (org teams: of the teams of the visible matches).
    pub fn data_records(&self, dataset: DatasetId) -> BTreeMap<i64, Value> {
        self.client_view()
            .data
            .remove(dataset.name())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(id, text)| Some((id, serde_json::from_str(&text).ok()?)))
            .collect()
    }

    /// The datasets' part of a churn step: `modified`, `added`, `removed`
    /// by dataset (org teams are only modified; they come and go with the
    /// teams of the matches).
    pub(super) fn churn_datasets(
        &mut self,
        teams: &[i64],
        count: impl Fn(DatasetId, &str) -> usize,
    ) {
        for _ in 0..count(DatasetId::OrgTeams, "modified") {
            let Some(&team) = self.extras.rng.pick(teams) else {
                break;
            };
            *self.extras.org_revisions.entry(team).or_default() += 1;
        }
        for what in ["modified", "added", "removed"] {
            for _ in 0..count(DatasetId::Venues, what) {
                let extras = &mut self.extras;
                if what == "added" {
                    extras.add_venue();
                } else if !modify_or_remove(&mut extras.rng, &mut extras.venues, what, |v| {
                    v.revision += 1
                }) {
                    break;
                }
            }
        }
        for _ in 0..count(DatasetId::VenueDetails, "modified") {
            let ids: Vec<i64> = self.extras.venues.keys().copied().collect();
            let Some(id) = self.extras.rng.pick(&ids).copied() else {
                break;
            };
            if let Some(v) = self.extras.venues.get_mut(&id) {
                v.detail_revision += 1;
            }
        }
        for what in ["modified", "added", "removed"] {
            for _ in 0..count(DatasetId::Clubs, what) {
                let extras = &mut self.extras;
                if what == "added" {
                    let sport = SPORTS[extras.rng.below(SPORTS.len() as u64) as usize].0;
                    extras.add_club(sport);
                } else if !modify_or_remove(&mut extras.rng, &mut extras.clubs, what, |c| {
                    c.revision += 1
                }) {
                    break;
                }
            }
        }
    }
}

/// A churn step on one of `records`, picked at random: `bump` it
/// ("modified") or remove it; false when there is none left.
fn modify_or_remove<T>(
    rng: &mut Rng,
    records: &mut BTreeMap<i64, T>,
    what: &str,
    bump: impl FnOnce(&mut T),
) -> bool {
    let ids: Vec<i64> = records.keys().copied().collect();
    let Some(&id) = rng.pick(&ids) else {
        return false;
    };
    if what == "removed" {
        records.remove(&id);
    } else if let Some(record) = records.get_mut(&id) {
        bump(record);
    }
    true
}

/// Which dataset churn a spec may name: `<dataset>_<modified|added|removed>`.
pub fn churn_names() -> Vec<String> {
    let mut names = Vec::new();
    for dataset in DatasetId::ALL {
        let whats: &[&str] = match dataset {
            DatasetId::OrgTeams | DatasetId::VenueDetails => &["modified"],
            DatasetId::Venues | DatasetId::Clubs => &["modified", "added", "removed"],
        };
        for what in whats {
            names.push(format!("{}_{what}", dataset.name()));
        }
    }
    names
}
