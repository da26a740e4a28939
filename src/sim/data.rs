//! The simulator's data set: generation, the JSON it serves, churn, and the
//! client's-eye view used to report exactly what a churn step changed.
//!
//! Everything here is deterministic for a given seed and "today", and free of
//! I/O, so the server module only routes requests to it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::RangeInclusive;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::dataset::DatasetId;
use crate::report::Tier;
use crate::rng::Rng;

#[path = "datasets.rs"]
mod datasets;
pub use datasets::churn_names;

/// The sports the simulator serves (the seed's bandy and floorball).
pub const SPORTS: [(i64, &str); 2] = [(72, "Bandy"), (151, "Innebandy")];
/// The client default this data set is shaped for (`sync.first_year`).
pub const DEFAULT_FIRST_YEAR: i32 = 2024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    Small,
    Norway,
    #[value(name = "10x")]
    TenX,
}

struct Shape {
    /// Valid seasons per sport and year.
    seasons_per_sport_year: usize,
    tournaments_per_season: usize,
    /// One in this many tournaments is a child of a root.
    child_every: usize,
    matches_per_root: usize,
    /// One in this many roots has no matches.
    empty_root_every: usize,
    teams_per_sport: usize,
}

impl Scale {
    fn shape(self) -> Shape {
        match self {
            // 4 valid seasons, 40 tournaments (30 roots), ~200 matches, ~60 teams.
            Scale::Small => Shape {
                seasons_per_sport_year: 1,
                tournaments_per_season: 10,
                child_every: 4,
                matches_per_root: 8,
                empty_root_every: 7,
                teams_per_sport: 30,
            },
            // 8 valid seasons, 2,000 tournaments (1,500 roots), ~45,000 matches, ~3,000 teams.
            Scale::Norway => Shape {
                seasons_per_sport_year: 2,
                tournaments_per_season: 250,
                child_every: 4,
                matches_per_root: 32,
                empty_root_every: 16,
                teams_per_sport: 1_500,
            },
            // Ten times norway in every dimension.
            Scale::TenX => Shape {
                seasons_per_sport_year: 20,
                tournaments_per_season: 250,
                child_every: 4,
                matches_per_root: 32,
                empty_root_every: 16,
                teams_per_sport: 15_000,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct SimSeason {
    id: i64,
    sport_id: i64,
    name: String,
    year: i32,
    date_from: NaiveDate,
    date_to: NaiveDate,
    /// Serve dates as `MM/DD/YYYY hh:mm:ss` instead of ISO-8601.
    us_dates: bool,
    last_change: NaiveDateTime,
}

#[derive(Debug, Clone)]
struct SimTournament {
    id: i64,
    season_id: i64,
    sport_id: i64,
    parent_id: Option<i64>,
    name: String,
    /// How a root's missing parent is spelled: 0 = null, 1 = absent, 2 = `0`.
    root_style: u8,
    kind: &'static str,
    last_change: NaiveDateTime,
}

#[derive(Debug, Clone)]
struct SimMatch {
    id: i64,
    tournament_id: i64,
    root_id: i64,
    home: i64,
    away: i64,
    /// `None`: served with `matchDate: null`.
    date: Option<NaiveDateTime>,
    us_date: bool,
    venue: usize,
    round: u32,
    result: Option<(u32, u32)>,
    spectators: u32,
    last_change: NaiveDateTime,
}

#[derive(Debug, Clone)]
struct SimTeam {
    id: i64,
    sport_id: i64,
    name: String,
    club_id: i64,
}

const PLACES: [&str; 32] = [
    "Oslo",
    "Bergen",
    "Trondheim",
    "Stavanger",
    "Drammen",
    "Fredrikstad",
    "Kristiansand",
    "Sandnes",
    "Tromsø",
    "Sarpsborg",
    "Skien",
    "Ålesund",
    "Sandefjord",
    "Haugesund",
    "Tønsberg",
    "Moss",
    "Porsgrunn",
    "Bodø",
    "Arendal",
    "Hamar",
    "Larvik",
    "Halden",
    "Lillehammer",
    "Molde",
    "Harstad",
    "Gjøvik",
    "Kongsberg",
    "Horten",
    "Mjøndalen",
    "Ski",
    "Stabekk",
    "Solberg",
];
const SUFFIXES: [&str; 6] = ["IL", "IF", "BK", "SK", "Sportsklubb", "Idrettslag"];
const VENUES: [&str; 8] = [
    "Valle Hovin",
    "Bergenshallen",
    "Nadderud Arena",
    "Drammenshallen",
    "Stabekk kunstis",
    "Ekeberghallen",
    "Sandnes Idrettspark",
    "Nordlandshallen",
];
const DIVISIONS: [&str; 8] = [
    "Eliteserien",
    "1. divisjon",
    "2. divisjon",
    "3. divisjon",
    "Junior",
    "G16",
    "J16",
    "Veteran",
];

/// Ids a correct diff must report after a churn step, per category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedIds {
    pub valid_seasons: Vec<i64>,
    pub tournaments_in_season: Vec<i64>,
    pub tournament_matches: Vec<i64>,
    pub individual_matches: Vec<i64>,
    pub unique_team_ids: Vec<i64>,
    /// Each dataset's changed ids, by name (only those that changed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, Vec<i64>>,
}

impl ChangedIds {
    /// One dataset's changed ids, sorted.
    pub fn of_dataset(&self, dataset: DatasetId) -> &[i64] {
        self.data.get(dataset.name()).map_or(&[], Vec::as_slice)
    }

    /// Adds the ids of a later churn step that touched other things (the
    /// union is then what one diff over both reports).
    pub fn extend(&mut self, other: ChangedIds) {
        for (mine, theirs) in [
            (&mut self.valid_seasons, other.valid_seasons),
            (&mut self.tournaments_in_season, other.tournaments_in_season),
            (&mut self.tournament_matches, other.tournament_matches),
            (&mut self.individual_matches, other.individual_matches),
            (&mut self.unique_team_ids, other.unique_team_ids),
        ] {
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
        for (name, theirs) in other.data {
            let mine = self.data.entry(name).or_default();
            mine.extend(theirs);
            mine.sort_unstable();
            mine.dedup();
        }
    }
}

/// What a churn step should do (each count is "up to": it stops when no
/// candidate is left).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChurnSpec {
    #[serde(default)]
    pub matches_modified: usize,
    #[serde(default)]
    pub matches_added: usize,
    #[serde(default)]
    pub matches_removed: usize,
    #[serde(default)]
    pub tournaments_added: usize,
    #[serde(default)]
    pub tournaments_removed: usize,
    #[serde(default)]
    pub tournaments_renamed: usize,
    #[serde(default)]
    pub seasons_changed: usize,
    /// Limit modified matches to those dated within this many days of today.
    #[serde(default)]
    pub in_window_days: Option<i64>,
    /// Limit modified matches to those dated more than this many days from today.
    #[serde(default)]
    pub out_of_window_days: Option<i64>,
    /// Limit modified, added and removed matches to roots of this polling
    /// tier (`"live"`, `"active"`, `"dormant"`), by precache's default
    /// windows at the time of the churn: a match day's churn is mostly live.
    #[serde(default)]
    pub root_tier: Option<Tier>,
    /// The datasets' churn: `<dataset>_<modified|added|removed>` → count
    /// ([`churn_names`]); any other name is refused by [`ChurnSpec::check`].
    #[serde(flatten)]
    pub data: BTreeMap<String, usize>,
}

impl ChurnSpec {
    /// A dataset's churn of one kind.
    pub fn data_count(&self, dataset: DatasetId, what: &str) -> usize {
        self.data
            .get(&format!("{}_{what}", dataset.name()))
            .copied()
            .unwrap_or(0)
    }

    /// An unknown field (the seed's fields are known to serde; the rest
    /// must be dataset churn).
    pub fn check(&self) -> Result<(), String> {
        let known = churn_names();
        match self.data.keys().find(|k| !known.contains(k)) {
            None => Ok(()),
            Some(bad) => Err(format!(
                "unknown churn field {bad:?}; datasets take {known:?}"
            )),
        }
    }
}

pub struct Dataset {
    today: NaiveDate,
    years: RangeInclusive<i32>,
    rng: Rng,
    seasons: BTreeMap<i64, SimSeason>,
    tournaments: BTreeMap<i64, SimTournament>,
    matches: BTreeMap<i64, SimMatch>,
    matches_by_root: HashMap<i64, BTreeSet<i64>>,
    teams: BTreeMap<i64, SimTeam>,
    /// Per sport, its teams' ids are one block: (first id, count).
    team_blocks: HashMap<i64, (i64, u64)>,
    children: HashMap<i64, Vec<i64>>,
    generated_tournaments: usize,
    next_tournament_id: i64,
    next_match_id: i64,
    /// A moment that moves forward with each change, for `lastChangeDate`.
    clock: NaiveDateTime,
    /// The datasets beyond the seed's chain.
    extras: datasets::Extras,
}

fn at_midnight(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).unwrap_or_default()
}

fn format_date(dt: NaiveDateTime, us: bool) -> String {
    if us {
        dt.format("%m/%d/%Y %H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

impl Dataset {
    /// Generates the data set for `scale` and `seed`, with seasons of the
    /// years a default client asks for (`today`'s year and the one before).
    pub fn generate(scale: Scale, seed: u64, today: NaiveDate) -> Dataset {
        let shape = scale.shape();
        let this_year = today.year();
        let years = DEFAULT_FIRST_YEAR.max(this_year - 1)..=this_year;
        let mut ds = Dataset {
            today,
            years: years.clone(),
            rng: Rng::new(seed),
            seasons: BTreeMap::new(),
            tournaments: BTreeMap::new(),
            matches: BTreeMap::new(),
            matches_by_root: HashMap::new(),
            teams: BTreeMap::new(),
            team_blocks: HashMap::new(),
            children: HashMap::new(),
            generated_tournaments: 0,
            next_tournament_id: 400_000,
            next_match_id: 8_000_000,
            clock: at_midnight(today) - Duration::days(30),
            extras: datasets::Extras::generate(scale, seed),
        };
        let mut team_id = 500_000;
        for (sport_id, _) in SPORTS {
            ds.team_blocks
                .insert(sport_id, (team_id + 1, shape.teams_per_sport as u64));
            for i in 0..shape.teams_per_sport {
                team_id += 1;
                let place = PLACES[i % PLACES.len()];
                let suffix = SUFFIXES[(i / PLACES.len()) % SUFFIXES.len()];
                let n = i / (PLACES.len() * SUFFIXES.len());
                let name = if n == 0 {
                    format!("{place} {suffix}")
                } else {
                    format!("{place} {suffix} {}", n + 1)
                };
                ds.teams.insert(
                    team_id,
                    SimTeam {
                        id: team_id,
                        sport_id,
                        name,
                        club_id: 10_000 + (i % 700) as i64 + sport_id * 1000,
                    },
                );
            }
        }
        let mut season_id = 200_000;
        for year in years {
            for (sport_id, sport_name) in SPORTS {
                for k in 0..shape.seasons_per_sport_year {
                    season_id += 1;
                    let from =
                        NaiveDate::from_ymd_opt(year, 8, 1 + (k % 20) as u32).unwrap_or(today);
                    let to = NaiveDate::from_ymd_opt(year + 1, 4, 30).unwrap_or(today);
                    let name = if k == 0 {
                        format!("{sport_name} {year}/{}", year + 1)
                    } else {
                        format!("{sport_name} {year}/{} ({})", year + 1, k + 1)
                    };
                    ds.add_season(season_id, sport_id, name, year, from, to);
                    ds.populate_season(season_id, &shape);
                }
            }
        }
        // A match day: whatever the calendar says, each sport has a match
        // today, so live roots exist in every month of the year (tests that
        // churn live roots would otherwise pass or fail by the date).
        for (sport_id, _) in SPORTS {
            if let Some(root) = ds.match_day_root(sport_id) {
                ds.add_match_on(root, Some(today));
            }
        }
        // A long-running season the client must filter out: listed under the
        // first year asked for, but starting before `first_year`.
        let old_year = *ds.years.start();
        for (sport_id, sport_name) in SPORTS {
            season_id += 1;
            let from = NaiveDate::from_ymd_opt(DEFAULT_FIRST_YEAR - 1, 9, 1).unwrap_or(today);
            let to = NaiveDate::from_ymd_opt(old_year + 1, 3, 31).unwrap_or(today);
            ds.add_season(
                season_id,
                sport_id,
                format!("{sport_name} langtidsserie {}", DEFAULT_FIRST_YEAR - 1),
                old_year,
                from,
                to,
            );
            let small = Shape {
                tournaments_per_season: 3,
                ..Scale::Small.shape()
            };
            ds.populate_season(season_id, &small);
        }
        ds
    }

    fn add_season(
        &mut self,
        id: i64,
        sport_id: i64,
        name: String,
        year: i32,
        from: NaiveDate,
        to: NaiveDate,
    ) {
        let us_dates = id % 2 == 0;
        self.seasons.insert(
            id,
            SimSeason {
                id,
                sport_id,
                name,
                year,
                date_from: from,
                date_to: to,
                us_dates,
                last_change: self.clock,
            },
        );
    }

    fn populate_season(&mut self, season_id: i64, shape: &Shape) {
        let season = self.seasons[&season_id].clone();
        let mut roots: Vec<i64> = Vec::new();
        for _ in 0..shape.tournaments_per_season {
            // Counting across seasons keeps the child share exact overall.
            self.generated_tournaments += 1;
            let is_child =
                !roots.is_empty() && self.generated_tournaments.is_multiple_of(shape.child_every);
            let parent = if is_child {
                self.rng.pick(&roots).copied()
            } else {
                None
            };
            let id = self.add_tournament(&season, parent);
            if parent.is_none() {
                roots.push(id);
            }
        }
        for (i, root) in roots.iter().enumerate() {
            if i % shape.empty_root_every == shape.empty_root_every - 1 {
                self.matches_by_root.insert(*root, BTreeSet::new());
                continue;
            }
            let n = shape.matches_per_root / 2
                + self.rng.below(shape.matches_per_root as u64 + 1) as usize;
            for _ in 0..n {
                self.add_match(*root);
            }
        }
    }

    fn add_tournament(&mut self, season: &SimSeason, parent: Option<i64>) -> i64 {
        self.next_tournament_id += 1;
        let id = self.next_tournament_id;
        let division = DIVISIONS[self.rng.below(DIVISIONS.len() as u64) as usize];
        let name = match parent {
            Some(p) => {
                let letter = (b'A' + self.rng.below(6) as u8) as char;
                format!("{} - avdeling {letter}", self.tournaments[&p].name)
            }
            None => format!("{division} {} {}", season.year, id % 1000),
        };
        let kinds = ["Serie", "Sluttspill", "Cup"];
        self.tournaments.insert(
            id,
            SimTournament {
                id,
                season_id: season.id,
                sport_id: season.sport_id,
                parent_id: parent,
                name,
                root_style: (id % 3) as u8,
                kind: kinds[(id % 3) as usize],
                last_change: self.clock,
            },
        );
        match parent {
            None => {
                self.matches_by_root.entry(id).or_default();
            }
            Some(p) => self.children.entry(p).or_default().push(id),
        }
        id
    }

    /// The root a sport's match day goes to: the first root with matches
    /// of the season in progress, or of the newest season between seasons.
    fn match_day_root(&self, sport_id: i64) -> Option<i64> {
        let season = self
            .seasons
            .values()
            .filter(|s| s.sport_id == sport_id)
            .max_by_key(|s| {
                (
                    s.date_from <= self.today && self.today <= s.date_to,
                    s.date_from,
                )
            })?;
        self.tournaments
            .values()
            .filter(|t| t.season_id == season.id && t.parent_id.is_none())
            .map(|t| t.id)
            .find(|root| {
                self.matches_by_root
                    .get(root)
                    .is_some_and(|m| !m.is_empty())
            })
    }

    fn add_match(&mut self, root_id: i64) -> i64 {
        self.add_match_on(root_id, None)
    }

    /// Adds a match under `root_id`, on `day` or a random day of its season.
    fn add_match_on(&mut self, root_id: i64, day: Option<NaiveDate>) -> i64 {
        self.next_match_id += 1;
        let id = self.next_match_id;
        let root = &self.tournaments[&root_id];
        let season = &self.seasons[&root.season_id];
        let sport_id = season.sport_id;
        // Some matches belong to a child tournament; they are still listed under the root.
        let children: Vec<i64> = self.children.get(&root_id).cloned().unwrap_or_default();
        let tournament_id = if !children.is_empty() && self.rng.chance(0.3) {
            *self.rng.pick(&children).unwrap_or(&root_id)
        } else {
            root_id
        };
        let span = (season.date_to - season.date_from).num_days().max(1) as u64;
        let drawn = season.date_from + Duration::days(self.rng.below(span) as i64);
        let fixed = day.is_some();
        let day = day.unwrap_or(drawn);
        let hour = 12 + self.rng.below(9) as u32;
        let date = day.and_hms_opt(hour, 0, 0);
        // Every 61st drawn match is undated (a schedule to come).
        let date = if id % 61 == 0 && !fixed { None } else { date };
        let (home, away) = self.pick_teams(sport_id);
        let played = date.is_some_and(|d| d.date() < self.today);
        let result = played.then(|| (self.rng.below(8) as u32, self.rng.below(8) as u32));
        let m = SimMatch {
            id,
            tournament_id,
            root_id,
            home,
            away,
            date,
            us_date: id % 9 == 0,
            venue: self.rng.below(VENUES.len() as u64) as usize,
            round: 1 + self.rng.below(22) as u32,
            result,
            spectators: self.rng.below(900) as u32,
            last_change: self.clock,
        };
        self.matches.insert(id, m);
        self.matches_by_root.entry(root_id).or_default().insert(id);
        id
    }

    fn pick_teams(&mut self, sport_id: i64) -> (i64, i64) {
        let (first, count) = self.team_blocks.get(&sport_id).copied().unwrap_or((0, 2));
        let count = count.max(2);
        let home = self.rng.below(count);
        let mut away = self.rng.below(count - 1);
        if away >= home {
            away += 1;
        }
        (first + home as i64, first + away as i64)
    }

    // ---- what the API serves ----

    fn season_is_visible(&self, s: &SimSeason) -> bool {
        self.years.contains(&s.year) && s.date_from.year() >= DEFAULT_FIRST_YEAR
    }

    fn season_json(&self, s: &SimSeason) -> Value {
        let sport_name = SPORTS
            .iter()
            .find(|(id, _)| *id == s.sport_id)
            .map(|(_, n)| *n);
        json!({
            "seasonId": s.id,
            "seasonName": s.name,
            "seasonYear": s.year,
            "sportId": s.sport_id,
            "sportName": sport_name,
            "seasonDateFrom": format_date(at_midnight(s.date_from), s.us_dates),
            "seasonDateTo": format_date(at_midnight(s.date_to), s.us_dates),
            "seasonStatusId": if s.date_to < self.today { 2 } else { 1 },
            "lastChangeDate": format_date(s.last_change, false),
        })
    }

    fn tournament_json(&self, t: &SimTournament) -> Value {
        let mut v = json!({
            "tournamentId": t.id,
            "tournamentName": t.name,
            "seasonId": t.season_id,
            "sportId": t.sport_id,
            "tournamentType": t.kind,
            "tournamentNo": format!("{}-{}", t.season_id % 1000, t.id % 10_000),
            "genderId": 1 + t.id % 3,
            "orgIdOwner": 300_000 + t.sport_id,
            "lastChangeDate": format_date(t.last_change, false),
        });
        let parent = match (t.parent_id, t.root_style) {
            (Some(p), _) => Some(json!(p)),
            (None, 0) => Some(Value::Null),
            (None, 1) => None,
            (None, _) => Some(json!(0)),
        };
        if let (Some(parent), Some(obj)) = (parent, v.as_object_mut()) {
            obj.insert("parentTournamentId".into(), parent);
        }
        v
    }

    fn match_json(&self, m: &SimMatch) -> Value {
        let team = |id: i64| self.teams.get(&id).map(|t| t.name.clone());
        let status = match m.result {
            Some(_) => (4, "Ferdig"),
            None => (1, "Ikke påbegynt"),
        };
        json!({
            "matchId": m.id,
            "matchNo": format!("{:06}", m.id % 1_000_000),
            "tournamentId": m.tournament_id,
            "matchDate": m.date.map(|d| format_date(at_midnight(d.date()), m.us_date)),
            "matchStartTime": m.date.map(|d| d.format("%H%M").to_string()),
            "hometeamId": m.home,
            "hometeam": team(m.home),
            "awayteamId": m.away,
            "awayteam": team(m.away),
            "venueUnitId": 70_000 + m.venue as i64,
            "venueUnitName": VENUES[m.venue],
            "round": m.round,
            "statusTypeId": status.0,
            "statusType": status.1,
            "matchResult": m.result.map(|(h, a)| json!({"homeGoals": h, "awayGoals": a})),
            "spectators": m.spectators,
            "lastChangeDate": format_date(m.last_change, false),
        })
    }

    /// `GET Seasons/?year&sportId`.
    pub fn seasons_body(&self, year: i32, sport_id: i64) -> Value {
        let list: Vec<Value> = self
            .seasons
            .values()
            .filter(|s| s.year == year && s.sport_id == sport_id)
            .map(|s| self.season_json(s))
            .collect();
        json!({ "seasons": list })
    }

    /// `GET Tournament/Season/{id}/` — `None` for an unknown season.
    pub fn tournaments_body(&self, season_id: i64) -> Option<Value> {
        self.seasons.get(&season_id)?;
        let list: Vec<Value> = self
            .tournaments
            .values()
            .filter(|t| t.season_id == season_id)
            .map(|t| self.tournament_json(t))
            .collect();
        Some(json!({ "tournamentsInSeason": list }))
    }

    /// `GET TournamentMatches?tournamentId` — a root lists its own and its
    /// children's matches; a child lists its own. `None` for an unknown id.
    pub fn matches_list(&self, tournament_id: i64) -> Option<Vec<Value>> {
        let t = self.tournaments.get(&tournament_id)?;
        let ids: Vec<i64> = match t.parent_id {
            None => self
                .matches_by_root
                .get(&tournament_id)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            Some(_) => self
                .matches_by_root
                .get(&self.root_of(tournament_id))
                .map(|s| {
                    s.iter()
                        .copied()
                        .filter(|id| self.matches[id].tournament_id == tournament_id)
                        .collect()
                })
                .unwrap_or_default(),
        };
        Some(
            ids.iter()
                .map(|id| self.match_json(&self.matches[id]))
                .collect(),
        )
    }

    /// The first match of the nearest root below `root` that has matches
    /// (for the hostile answer "the same match under two roots").
    pub fn lower_root_match(&self, root: i64) -> Option<Value> {
        self.tournaments
            .range(..root)
            .rev()
            .filter(|(_, t)| t.parent_id.is_none())
            .find_map(|(id, _)| self.matches_by_root.get(id)?.iter().next())
            .map(|id| self.match_json(&self.matches[id]))
    }

    /// A root other than `root` (for "a match naming another root").
    pub fn other_root(&self, root: i64) -> Option<i64> {
        self.tournaments
            .values()
            .filter(|t| t.parent_id.is_none() && t.id != root)
            .map(|t| t.id)
            .next()
    }

    fn root_of(&self, tournament_id: i64) -> i64 {
        self.tournaments
            .get(&tournament_id)
            .and_then(|t| t.parent_id)
            .unwrap_or(tournament_id)
    }

    pub fn match_body(&self, match_id: i64) -> Option<Value> {
        self.matches.get(&match_id).map(|m| self.match_json(m))
    }

    pub fn incidents_body(&self, match_id: i64) -> Option<Value> {
        let m = self.matches.get(&match_id)?;
        let (h, a) = m.result.unwrap_or((0, 0));
        let mut incidents = Vec::new();
        for i in 0..(h + a) {
            let team = if i < h { m.home } else { m.away };
            incidents.push(json!({
                "matchIncidentId": m.id * 100 + i as i64,
                "incidentType": "Mål",
                "teamId": team,
                "time": 3 + (m.id as u32 + i * 7) % 85,
            }));
        }
        Some(json!({ "matchId": m.id, "matchIncidents": incidents }))
    }

    pub fn referee_body(&self, match_id: i64) -> Option<Value> {
        let m = self.matches.get(&match_id)?;
        Some(json!({
            "matchId": m.id,
            "referees": [
                {"personId": 900_000 + m.id % 5000, "refereeType": "Hoveddommer"},
                {"personId": 905_000 + m.id % 5000, "refereeType": "Linjedommer"},
            ]
        }))
    }

    pub fn team_members_body(&self, match_id: i64) -> Option<Value> {
        let m = self.matches.get(&match_id)?;
        let members = |team: i64| -> Vec<Value> {
            (0..12)
                .map(|i| json!({"personId": team * 100 + i, "shirtNo": i + 1, "teamId": team}))
                .collect()
        };
        Some(json!({
            "matchId": m.id,
            "homeTeamMembers": members(m.home),
            "awayTeamMembers": members(m.away),
        }))
    }

    /// `GET tournament/?tournamentId=`: a tournament's page (warmed only).
    pub fn tournament_page_body(&self, tournament_id: i64) -> Option<Value> {
        let t = self.tournaments.get(&tournament_id)?;
        Some(json!({ "tournament": self.tournament_json(t) }))
    }

    pub fn team_body(&self, team_id: i64) -> Option<Value> {
        let t = self.teams.get(&team_id)?;
        Some(json!({
            "teamId": t.id,
            "teamName": t.name,
            "clubId": t.club_id,
            "sportId": t.sport_id,
        }))
    }

    // ---- what a correct client sees, and churn ----

    /// The data a client with the default configuration mirrors, as canonical
    /// JSON per record — the same bytes it compares.
    fn client_view(&self) -> ClientView {
        let mut view = ClientView::default();
        for s in self.seasons.values().filter(|s| self.season_is_visible(s)) {
            view.seasons.insert(s.id, self.season_json(s).to_string());
        }
        for t in self
            .tournaments
            .values()
            .filter(|t| view.seasons.contains_key(&t.season_id))
        {
            view.tournaments
                .insert(t.id, self.tournament_json(t).to_string());
            if t.parent_id.is_none() {
                let mut list = Vec::new();
                for id in self.matches_by_root.get(&t.id).into_iter().flatten() {
                    let m = &self.matches[id];
                    let json = self.match_json(m).to_string();
                    view.matches.insert(m.id, json.clone());
                    view.teams.insert(m.home);
                    view.teams.insert(m.away);
                    list.push((m.id, json));
                }
                view.roots.insert(t.id, list);
            }
        }
        view.data = self.data_view(&view.teams);
        view
    }

    pub fn stats(&self) -> crate::model::ItemCounts {
        let v = self.client_view();
        crate::model::ItemCounts {
            valid_seasons: v.seasons.len(),
            tournaments: v.tournaments.len(),
            root_tournaments: v.roots.len(),
            matches: v.matches.len(),
            teams: v.teams.len(),
            datasets: DatasetId::ALL.map(|d| v.data.get(d.name()).map_or(0, BTreeMap::len)),
        }
    }

    /// Ids of every match a default client sees (for tests that compute expectations).
    pub fn visible_match_ids(&self) -> Vec<i64> {
        self.client_view().matches.into_keys().collect()
    }

    fn tick(&mut self) -> NaiveDateTime {
        self.clock += Duration::minutes(1);
        self.clock
    }

    /// Of `roots`, those in `tier` now (all of them for `None`).
    fn roots_in_tier(&self, tier: Option<Tier>, roots: &[i64]) -> HashSet<i64> {
        roots
            .iter()
            .copied()
            .filter(|root| tier.is_none_or(|tier| self.root_tier(*root) == Some(tier)))
            .collect()
    }

    /// The root tournament `match_id` is listed under.
    pub fn match_root(&self, match_id: i64) -> Option<i64> {
        self.matches.get(&match_id).map(|m| m.root_id)
    }

    /// The polling tier of `root` now (`None` for a root we do not have),
    /// by precache's default windows and DESIGN.md section 10's rule, from
    /// the dates as served (a `matchDate` is the day, at midnight). Decided
    /// here, not by `sync::poll`: the match-day benchmark checks precache's
    /// tiers against this, so it must not borrow them.
    pub fn root_tier(&self, root: i64) -> Option<Tier> {
        let matches = self.matches_by_root.get(&root)?;
        let sync = crate::config::Config::default().sync;
        let live = Duration::hours(sync.live_window_hours as i64);
        let active = Duration::days(sync.active_window_days as i64);
        let now = chrono::Local::now().naive_local();
        let dated: Vec<Duration> = matches
            .iter()
            .filter_map(|id| self.matches[id].date)
            .map(|d| (at_midnight(d.date()) - now).abs())
            .collect();
        Some(match dated.iter().min() {
            Some(nearest) if *nearest <= live => Tier::Live,
            Some(nearest) if *nearest <= active => Tier::Active,
            Some(_) => Tier::Dormant,
            // Only undated matches: a schedule to come. No matches: dormant.
            None if matches.is_empty() => Tier::Dormant,
            None => Tier::Active,
        })
    }

    /// Applies a churn step and returns exactly what a correct diff reports next.
    pub fn churn(&mut self, spec: &ChurnSpec) -> ChangedIds {
        let before = self.client_view();
        let visible_seasons: Vec<i64> = before.seasons.keys().copied().collect();
        let mut scope = ChurnScope {
            seasons: visible_seasons,
            in_tier: None,
        };
        if spec.root_tier.is_some() {
            scope.in_tier = Some(self.roots_in_tier(spec.root_tier, &scope.roots(self)));
        }
        self.modify_matches(spec, &scope);
        self.remove_matches(spec.matches_removed, &scope);
        // Add matches.
        for _ in 0..spec.matches_added {
            let roots = scope.roots(self);
            let Some(&root) = self.rng.pick(&roots) else {
                break;
            };
            self.tick();
            self.add_match(root);
        }
        self.rename_tournaments(spec.tournaments_renamed, &scope.seasons);
        // Remove root tournaments with their children and matches.
        for _ in 0..spec.tournaments_removed {
            let roots = scope.roots(self);
            let Some(&root) = self.rng.pick(&roots) else {
                break;
            };
            self.tournaments
                .retain(|_, t| t.id != root && t.parent_id != Some(root));
            self.children.remove(&root);
            for id in self.matches_by_root.remove(&root).unwrap_or_default() {
                self.matches.remove(&id);
            }
        }
        // Add root tournaments with a few matches.
        for _ in 0..spec.tournaments_added {
            let Some(&season_id) = self.rng.pick(&scope.seasons) else {
                break;
            };
            self.tick();
            let season = self.seasons[&season_id].clone();
            let id = self.add_tournament(&season, None);
            for _ in 0..3 {
                self.add_match(id);
            }
        }
        // The datasets.
        let teams: Vec<i64> = before.teams.iter().copied().collect();
        self.churn_datasets(&teams, |d, what| spec.data_count(d, what));
        // Change seasons.
        for _ in 0..spec.seasons_changed {
            let Some(&id) = self.rng.pick(&scope.seasons) else {
                break;
            };
            let now = self.tick();
            if let Some(s) = self.seasons.get_mut(&id) {
                s.last_change = now;
            }
        }
        let after = self.client_view();
        before.changes_to(&after)
    }

    /// A churn step's score changes, each to a match of the scope (inside
    /// or outside the warm-up window when the spec says).
    fn modify_matches(&mut self, spec: &ChurnSpec, scope: &ChurnScope) {
        let mut candidates = scope.matches(self);
        let today = self.today;
        let distance = |m: &SimMatch| m.date.map(|d| (d.date() - today).num_days().abs());
        if let Some(days) = spec.in_window_days {
            candidates.retain(|id| distance(&self.matches[id]).is_some_and(|n| n <= days));
        }
        if let Some(days) = spec.out_of_window_days {
            candidates.retain(|id| distance(&self.matches[id]).is_some_and(|n| n > days));
        }
        for _ in 0..spec.matches_modified {
            if candidates.is_empty() {
                break;
            }
            let idx = self.rng.below(candidates.len() as u64) as usize;
            let id = candidates.swap_remove(idx);
            let now = self.tick();
            let spectators = self.rng.below(900) as u32 + 1;
            if let Some(m) = self.matches.get_mut(&id) {
                m.result = Some(match m.result {
                    Some((h, a)) => (h + 1, a),
                    None => (1, 0),
                });
                m.spectators = m.spectators.wrapping_add(spectators);
                m.last_change = now;
            }
        }
    }

    /// Removes `n` matches of the scope, never a root's last one: a root
    /// that falls silent is what a client must not trust at once (DESIGN.md
    /// section 3).
    fn remove_matches(&mut self, n: usize, scope: &ChurnScope) {
        for _ in 0..n {
            let all: Vec<i64> = scope
                .matches(self)
                .into_iter()
                .filter(|id| {
                    let root = self.matches[id].root_id;
                    self.matches_by_root
                        .get(&root)
                        .is_some_and(|m| m.len() >= 2)
                })
                .collect();
            let Some(&id) = self.rng.pick(&all) else {
                break;
            };
            if let Some(m) = self.matches.remove(&id)
                && let Some(set) = self.matches_by_root.get_mut(&m.root_id)
            {
                set.remove(&id);
            }
        }
    }

    /// Renames `n` tournaments of the visible seasons (toggled, so names do
    /// not grow over a long soak).
    fn rename_tournaments(&mut self, n: usize, seasons: &[i64]) {
        for _ in 0..n {
            let ids: Vec<i64> = self
                .tournaments
                .values()
                .filter(|t| seasons.contains(&t.season_id))
                .map(|t| t.id)
                .collect();
            let Some(&id) = self.rng.pick(&ids) else {
                break;
            };
            let now = self.tick();
            if let Some(t) = self.tournaments.get_mut(&id) {
                t.name = match t.name.strip_suffix(" (omdøpt)") {
                    Some(original) => original.to_string(),
                    None => format!("{} (omdøpt)", t.name),
                };
                t.last_change = now;
            }
        }
    }
}

/// What a churn step may touch: the roots of the seasons a client sees,
/// and of those only the ones in the spec's tier when it names one.
struct ChurnScope {
    seasons: Vec<i64>,
    in_tier: Option<HashSet<i64>>,
}

impl ChurnScope {
    fn roots(&self, ds: &Dataset) -> Vec<i64> {
        let mut roots: Vec<i64> = ds
            .tournaments
            .values()
            .filter(|t| t.parent_id.is_none() && self.seasons.contains(&t.season_id))
            .map(|t| t.id)
            .filter(|id| self.in_tier.as_ref().is_none_or(|tier| tier.contains(id)))
            .collect();
        roots.sort_unstable();
        roots
    }

    fn matches(&self, ds: &Dataset) -> Vec<i64> {
        self.roots(ds)
            .iter()
            .flat_map(|r| ds.matches_by_root.get(r).into_iter().flatten().copied())
            .collect()
    }
}

#[derive(Default)]
struct ClientView {
    seasons: BTreeMap<i64, String>,
    tournaments: BTreeMap<i64, String>,
    /// Root id → its matches sorted by id.
    roots: BTreeMap<i64, Vec<(i64, String)>>,
    matches: BTreeMap<i64, String>,
    teams: BTreeSet<i64>,
    /// Each dataset's records by name.
    data: BTreeMap<&'static str, BTreeMap<i64, String>>,
}

/// Ids whose entry was added, removed or differs between two maps.
fn changed_keys<V: PartialEq>(a: &BTreeMap<i64, V>, b: &BTreeMap<i64, V>) -> Vec<i64> {
    let keys: BTreeSet<i64> = a.keys().chain(b.keys()).copied().collect();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

impl ClientView {
    fn changes_to(&self, after: &ClientView) -> ChangedIds {
        ChangedIds {
            valid_seasons: changed_keys(&self.seasons, &after.seasons),
            tournaments_in_season: changed_keys(&self.tournaments, &after.tournaments),
            tournament_matches: changed_keys(&self.roots, &after.roots),
            individual_matches: changed_keys(&self.matches, &after.matches),
            unique_team_ids: self
                .teams
                .symmetric_difference(&after.teams)
                .copied()
                .collect(),
            data: DatasetId::ALL
                .into_iter()
                .filter_map(|d| {
                    let none = BTreeMap::new();
                    let before = self.data.get(d.name()).unwrap_or(&none);
                    let after = after.data.get(d.name()).unwrap_or(&none);
                    let changed = changed_keys(before, after);
                    (!changed.is_empty()).then(|| (d.name().to_string(), changed))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
    }

    #[test]
    fn every_sport_has_a_visible_match_today_in_any_month() {
        for (month, day) in [(1, 1), (6, 15), (8, 1), (12, 1), (12, 31)] {
            let today = NaiveDate::from_ymd_opt(2027, month, day).unwrap();
            let ds = Dataset::generate(Scale::Small, 82, today);
            let visible = ds.visible_match_ids();
            for (sport_id, _) in SPORTS {
                let today_here = visible.iter().any(|id| {
                    let m = &ds.matches[id];
                    ds.tournaments[&m.root_id].sport_id == sport_id
                        && m.date.map(|d| d.date()) == Some(today)
                });
                assert!(today_here, "{today}: sport {sport_id} has no match today");
            }
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let a = Dataset::generate(Scale::Small, 42, today());
        let b = Dataset::generate(Scale::Small, 42, today());
        assert_eq!(a.client_view().matches, b.client_view().matches);
        let c = Dataset::generate(Scale::Small, 43, today());
        assert_ne!(a.client_view().matches, c.client_view().matches);
    }

    #[test]
    fn a_churn_aimed_at_a_tier_touches_only_roots_of_that_tier() {
        // Today's clock, as the tiers are decided against now.
        let mut ds = Dataset::generate(Scale::Norway, 5, chrono::Local::now().date_naive());
        for tier in Tier::ALL {
            let changed = ds.churn(&ChurnSpec {
                matches_modified: 5,
                matches_added: 1,
                root_tier: Some(tier),
                ..ChurnSpec::default()
            });
            assert_eq!(changed.individual_matches.len(), 6, "{tier:?}");
            for id in &changed.individual_matches {
                let root = ds.match_root(*id).expect("a root");
                assert_eq!(ds.root_tier(root), Some(tier), "match {id}");
            }
        }
    }

    #[test]
    fn norway_is_sized_like_the_real_data() {
        let s = Dataset::generate(Scale::Norway, 1, today()).stats();
        assert_eq!(s.valid_seasons, 8);
        assert_eq!(s.tournaments, 2000);
        assert_eq!(s.root_tournaments, 1500);
        assert!((40_000..=50_000).contains(&s.matches), "{s:?}");
        assert!((2_800..=3_000).contains(&s.teams), "{s:?}");
    }

    #[test]
    fn an_old_season_is_served_but_not_visible() {
        let ds = Dataset::generate(Scale::Small, 1, today());
        let served: usize = SPORTS
            .iter()
            .map(|(sport, _)| {
                ds.seasons_body(2025, *sport)["seasons"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(served, 4, "two 2025 seasons and two long-running ones");
        assert_eq!(ds.stats().valid_seasons, 4);
    }

    #[test]
    fn churn_reports_what_it_did() {
        let mut ds = Dataset::generate(Scale::Small, 3, today());
        let changed = ds.churn(&ChurnSpec {
            matches_modified: 3,
            ..Default::default()
        });
        assert_eq!(changed.individual_matches.len(), 3);
        assert!(!changed.tournament_matches.is_empty());
        assert!(changed.valid_seasons.is_empty());
        assert!(changed.tournaments_in_season.is_empty());
        let changed = ds.churn(&ChurnSpec {
            tournaments_renamed: 2,
            seasons_changed: 1,
            ..Default::default()
        });
        assert_eq!(changed.tournaments_in_season.len(), 2);
        assert_eq!(changed.valid_seasons.len(), 1);
        assert!(changed.individual_matches.is_empty());
        let none = ds.churn(&ChurnSpec::default());
        assert_eq!(none, ChangedIds::default());
    }
}
