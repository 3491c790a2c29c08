//! `dagrun generate`: deterministic Sparkify-shaped data at any scale. The same seed writes the
//! same bytes. It reproduces the real data's quirks: one small JSON object per song file in
//! `song_data/A/B/C/TR....json`, daily JSON-lines logs in `log_data/YYYY/MM/`, numeric artist names
//! and locations, null coordinates, year 0, logged-out events with `userId: ""`, user agents with
//! literal quotes and `\/` escapes, epoch-millisecond `ts` and float `registration`, users
//! switching from free to paid, double-encoded UTF-8 in some log artist names, and no trailing
//! newline at the end of any file. Most song plays match a generated song exactly.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::cli::GenerateArgs;
use crate::exit::Exit;

const WORDS: &[&str] = &[
    "Love",
    "Night",
    "Dream",
    "Fire",
    "Heart",
    "Rain",
    "Summer",
    "Road",
    "Blue",
    "Gold",
    "River",
    "Shadow",
    "Light",
    "Dance",
    "Ocean",
    "City",
    "Angel",
    "Storm",
    "Sky",
    "Wild",
    "Silent",
    "Electric",
    "Paper",
    "Broken",
    "Sweet",
    "Midnight",
    "Lonely",
    "Crazy",
    "Little",
    "Old",
    "New",
    "Black",
    "Red",
    "Morning",
    "Echo",
    "Ghost",
    "Highway",
    "Stone",
    "Velvet",
    "Neon",
    "Café",
    "Señorita",
    "Über",
    "Noël",
    "Jalapeño",
];
const FIRST_NAMES: &[&str] = &[
    "Walter", "Kaylee", "Ryan", "Chloe", "Jacob", "Lily", "Aleena", "Tegan", "Jayden", "Matthew", "Kate", "Sara",
    "Mohammad", "Isaac", "Ava", "Lucas", "Amiya", "Celeste", "Jordan", "Brayden", "Renée", "Zoë",
];
const LAST_NAMES: &[&str] = &[
    "Frye",
    "Summers",
    "Smith",
    "Cuevas",
    "Garcia",
    "Koch",
    "Kirby",
    "Levine",
    "Fox",
    "Jones",
    "Harrell",
    "Johnson",
    "Rodriguez",
    "Valencia",
    "Williams",
    "Nguyen",
    "Müller",
    "Ortíz",
];
const METROS: &[&str] = &[
    "San Francisco-Oakland-Hayward, CA",
    "Phoenix-Mesa-Scottsdale, AZ",
    "Atlanta-Sandy Springs-Roswell, GA",
    "Lansing-East Lansing, MI",
    "Chicago-Naperville-Elgin, IL-IN-WI",
    "New York-Newark-Jersey City, NY-NJ-PA",
    "Houston-The Woodlands-Sugar Land, TX",
    "Portland-South Portland, ME",
    "Tampa-St. Petersburg-Clearwater, FL",
    "San Juan-Carolina-Caguas, PR",
];
const PLACES: &[&str] = &[
    "Nashville, TN.",
    "California - SF",
    "London, England",
    "Hamburg, Germany",
    "Texas",
    "Brooklyn, NY",
    "Montréal, Québec",
    "Detroit, MI",
    "Seattle, WA",
    "São Paulo, Brazil",
];
const USER_AGENTS: &[&str] = &[
    "\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36\"",
    "\"Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/35.0.1916.153 Safari/537.36\"",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
    "\"Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53\"",
    "\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/36.0.1985.125 Chrome/36.0.1985.125 Safari/537.36\"",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; WOW64; Trident/6.0)",
];
const OTHER_PAGES: &[(&str, &str, u16)] = &[
    ("Home", "GET", 200),
    ("Home", "GET", 200),
    ("Settings", "GET", 200),
    ("Help", "GET", 200),
    ("About", "GET", 200),
    ("Upgrade", "GET", 200),
    ("Save Settings", "PUT", 307),
    ("Logout", "PUT", 307),
    ("Error", "GET", 404),
];

/// 2018-11-01T00:00:00Z in epoch milliseconds.
const START_MS: i64 = 1_541_030_400_000;
const DAY_MS: i64 = 86_400_000;

struct Artist {
    id: String,
    /// A JSON value: a quoted string, or a bare number for the numeric names real data has.
    name_json: String,
    /// The name as the logs write it (always text).
    name_text: String,
    location_json: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

struct Song {
    track: String,
    id: String,
    artist: usize,
    title: String,
    duration: f64,
    year: u32,
}

struct User {
    id: u64,
    first: String,
    last: String,
    gender: &'static str,
    location: &'static str,
    agent: &'static str,
    registration: i64,
    /// When a free user upgrades to paid, if ever.
    upgrade_at: Option<i64>,
    starts_paid: bool,
}

fn code(rng: &mut StdRng, prefix: &str) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut s = String::from(prefix);
    for _ in 0..16 {
        s.push(CHARS[rng.random_range(0..CHARS.len())] as char);
    }
    s
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn pick_ref<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn round5(x: f64) -> f64 {
    (x * 100_000.0).round() / 100_000.0
}

/// A JSON string literal the way the sources write them: non-ASCII as `\uXXXX`, and (logs only)
/// `/` as `\/`.
fn json_string(s: &str, escape_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escape_slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// UTF-8 bytes read as Latin-1: how "é" became "Ã©" in the real logs.
fn double_encode(s: &str) -> String {
    s.bytes().map(char::from).collect()
}

fn float(x: f64) -> String {
    let s = format!("{x}");
    if s.contains('.') || s.contains('e') { s } else { format!("{s}.0") }
}

fn opt_float(x: Option<f64>) -> String {
    x.map_or_else(|| "null".to_string(), float)
}

fn title(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..=4);
    (0..n).map(|_| pick(rng, WORDS)).collect::<Vec<_>>().join(" ")
}

fn artists_and_songs(rng: &mut StdRng, songs: u64) -> (Vec<Artist>, Vec<Song>) {
    let n_artists = (songs * 20 / 21).max(1) as usize;
    let artists: Vec<Artist> = (0..n_artists)
        .map(|_| {
            let id = code(rng, "AR");
            let (name_json, name_text) = if rng.random_bool(0.03) {
                let n = rng.random_range(1..1000).to_string();
                (n.clone(), n)
            } else {
                let name = format!(
                    "{} {}",
                    pick(rng, WORDS),
                    pick(rng, &["Band", "Trio", "Kids", "Collective", "Brothers", "Project", "Orchestra"])
                );
                (json_string(&name, false), name)
            };
            let location_json = match rng.random_range(0..20) {
                0..=4 => "\"\"".to_string(),
                5 => rng.random_range(10000..99999).to_string(),
                _ => json_string(pick(rng, PLACES), false),
            };
            let (latitude, longitude) = if rng.random_bool(0.6) {
                (None, None)
            } else {
                (Some(round5(rng.random_range(-60.0..70.0))), Some(round5(rng.random_range(-160.0..160.0))))
            };
            Artist { id, name_json, name_text, location_json, latitude, longitude }
        })
        .collect();
    let songs = (0..songs)
        .map(|i| Song {
            track: code(rng, "TR"),
            id: code(rng, "SO"),
            // Every artist gets at least one song; a few get more.
            artist: if (i as usize) < n_artists { i as usize } else { rng.random_range(0..n_artists) },
            title: title(rng),
            duration: round5(rng.random_range(30.0..600.0)),
            year: if rng.random_bool(0.5) { 0 } else { rng.random_range(1955..2011) },
        })
        .collect();
    (artists, songs)
}

fn song_json(song: &Song, artist: &Artist) -> String {
    format!(
        "{{\"num_songs\": 1, \"artist_id\": \"{}\", \"artist_latitude\": {}, \"artist_longitude\": {}, \"artist_location\": {}, \"artist_name\": {}, \"song_id\": \"{}\", \"title\": {}, \"duration\": {}, \"year\": {}}}",
        artist.id,
        opt_float(artist.latitude),
        opt_float(artist.longitude),
        artist.location_json,
        artist.name_json,
        song.id,
        json_string(&song.title, false),
        float(song.duration),
        song.year
    )
}

fn users(rng: &mut StdRng, events: u64) -> Vec<User> {
    let n = (events / 60).clamp(5, 100_000);
    (1..=n)
        .map(|id| {
            let starts_paid = rng.random_bool(0.2);
            User {
                id,
                first: pick(rng, FIRST_NAMES).to_string(),
                last: pick(rng, LAST_NAMES).to_string(),
                gender: if rng.random_bool(0.5) { "F" } else { "M" },
                location: pick(rng, METROS),
                agent: pick(rng, USER_AGENTS),
                registration: START_MS - rng.random_range(DAY_MS..200 * DAY_MS) + rng.random_range(0..1000),
                upgrade_at: (!starts_paid && rng.random_bool(0.2)).then(|| START_MS + rng.random_range(0..30 * DAY_MS)),
                starts_paid,
            }
        })
        .collect()
}

/// One log line, fields in the order of the real logs.
struct Event {
    ts: i64,
    line: String,
}

fn event_line(
    user: Option<&User>,
    (page, method, status): (&str, &str, u16),
    ts: i64,
    session: u64,
    item: u32,
    song: Option<(&str, &str, f64)>,
) -> String {
    let (artist, title, length) = match song {
        Some((a, t, l)) => (json_string(a, true), json_string(t, true), float(l)),
        None => ("null".into(), "null".into(), "null".into()),
    };
    match user {
        Some(u) => {
            let level = if u.starts_paid || u.upgrade_at.is_some_and(|at| ts >= at) { "paid" } else { "free" };
            format!(
                "{{\"artist\":{artist},\"auth\":\"Logged In\",\"firstName\":{},\"gender\":\"{}\",\"itemInSession\":{item},\"lastName\":{},\"length\":{length},\"level\":\"{level}\",\"location\":{},\"method\":\"{method}\",\"page\":\"{page}\",\"registration\":{}.0,\"sessionId\":{session},\"song\":{title},\"status\":{status},\"ts\":{ts},\"userAgent\":{},\"userId\":\"{}\"}}",
                json_string(&u.first, true),
                u.gender,
                json_string(&u.last, true),
                json_string(u.location, true),
                u.registration,
                json_string(u.agent, true),
                u.id
            )
        }
        None => format!(
            "{{\"artist\":null,\"auth\":\"Logged Out\",\"firstName\":null,\"gender\":null,\"itemInSession\":{item},\"lastName\":null,\"length\":null,\"level\":\"free\",\"location\":null,\"method\":\"{method}\",\"page\":\"{page}\",\"registration\":null,\"sessionId\":{session},\"song\":null,\"status\":{status},\"ts\":{ts},\"userAgent\":null,\"userId\":\"\"}}"
        ),
    }
}

fn events(rng: &mut StdRng, total: u64, days: u32, users: &[User], songs: &[Song], artists: &[Artist]) -> Vec<Event> {
    let mut out = Vec::with_capacity(total as usize);
    let mut session = 0u64;
    let span = i64::from(days) * DAY_MS;
    while (out.len() as u64) < total {
        session += 1;
        let mut ts = START_MS + rng.random_range(0..span - 3 * 3_600_000);
        let logged_out = rng.random_bool(0.04);
        let user = (!logged_out).then(|| pick_ref(rng, users));
        let length = if logged_out { rng.random_range(1..3) } else { rng.random_range(1..40) };
        for item in 0..length {
            if out.len() as u64 >= total {
                break;
            }
            let line = if logged_out {
                let page = if item == 0 { ("Home", "GET", 200) } else { ("Login", "PUT", 307) };
                event_line(None, page, ts, session, item, None)
            } else if rng.random_bool(0.82) {
                let song = if rng.random_bool(0.85) && !songs.is_empty() {
                    let s = pick_ref(rng, songs);
                    let artist = &artists[s.artist];
                    // Logs carry non-ASCII names double-encoded about half the time.
                    let name = if !artist.name_text.is_ascii() && rng.random_bool(0.5) {
                        double_encode(&artist.name_text)
                    } else {
                        artist.name_text.clone()
                    };
                    (name, s.title.clone(), s.duration)
                } else {
                    (
                        format!("{} {}", pick(rng, WORDS), pick(rng, LAST_NAMES)),
                        title(rng),
                        round5(rng.random_range(30.0..600.0)),
                    )
                };
                event_line(user, ("NextSong", "PUT", 200), ts, session, item, Some((&song.0, &song.1, song.2)))
            } else {
                event_line(user, pick(rng, OTHER_PAGES), ts, session, item, None)
            };
            out.push(Event { ts, line });
            ts += rng.random_range(1_000..300_000);
        }
    }
    out.sort_by_key(|e| e.ts);
    out
}

/// The log file of an event at `ts`, named by its day `offset_hours` from UTC.
fn day_file(root: &Path, ts: i64, offset_hours: i8) -> PathBuf {
    let local = ts + i64::from(offset_hours) * 3_600_000;
    let date = chrono::DateTime::from_timestamp_millis(local).expect("valid timestamp").date_naive();
    let f = date.format("%Y-%m-%d");
    root.join(date.format("%Y").to_string()).join(date.format("%m").to_string()).join(format!("{f}-events.json"))
}

/// Writes files with a few threads; the bytes do not depend on the order of writing.
fn write_all(files: Vec<(PathBuf, String)>) -> Result<(), String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<(), String> {
                    for (path, text) in part {
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                        }
                        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("a writer thread panicked".into())))
    })
}

/// Marks a folder whose `song_data/` and `log_data/` this command wrote (and may replace).
pub(crate) const GENERATED_MARKER: &str = ".dagrun-generated";

pub(crate) fn run(args: &GenerateArgs) -> Result<(), Exit> {
    let fail = |message: String| Exit::failed(format!("error: {message}"));
    let mut rng = StdRng::seed_from_u64(args.seed);
    let (artists, songs) = artists_and_songs(&mut rng, args.songs);
    let users = users(&mut rng, args.events);
    let events = events(&mut rng, args.events, args.days, &users, &songs, &artists);

    let song_root = args.out.join("song_data");
    let log_root = args.out.join("log_data");
    // Only data this command made is replaced: a folder of real data is never deleted.
    let marker = args.out.join(GENERATED_MARKER);
    let existing: Vec<&PathBuf> = [&song_root, &log_root].into_iter().filter(|d| d.exists()).collect();
    if !existing.is_empty() && !marker.exists() {
        return Err(fail(format!(
            "{} was not made by `dagrun generate` (it has no {GENERATED_MARKER}); its data is never replaced: \
             choose an empty or new folder",
            existing[0].display()
        )));
    }
    for dir in existing {
        std::fs::remove_dir_all(dir).map_err(|e| fail(format!("replacing {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(&args.out).map_err(|e| fail(format!("creating {}: {e}", args.out.display())))?;
    std::fs::write(
        &marker,
        format!(
            "made by dagrun generate --songs {} --events {} --days {} --seed {}{}\n",
            args.songs,
            args.events,
            args.days,
            args.seed,
            if args.files_offset == 0 { String::new() } else { format!(" --files-offset {}", args.files_offset) }
        ),
    )
    .map_err(|e| fail(format!("writing {}: {e}", marker.display())))?;
    let mut files: Vec<(PathBuf, String)> = songs
        .iter()
        .map(|s| {
            let t = s.track.as_bytes();
            let dir = song_root
                .join((t[2] as char).to_string())
                .join((t[3] as char).to_string())
                .join((t[4] as char).to_string());
            (dir.join(format!("{}.json", s.track)), song_json(s, &artists[s.artist]))
        })
        .collect();
    let mut day: Option<(PathBuf, String)> = None;
    for e in &events {
        let path = day_file(&log_root, e.ts, args.files_offset);
        match &mut day {
            Some((p, text)) if *p == path => {
                text.push('\n');
                text.push_str(&e.line);
            }
            _ => {
                if let Some(done) = day.take() {
                    files.push(done);
                }
                day = Some((path, e.line.clone()));
            }
        }
    }
    files.extend(day);
    if events.is_empty() {
        std::fs::create_dir_all(&log_root).map_err(|e| fail(format!("creating {}: {e}", log_root.display())))?;
    }
    if songs.is_empty() {
        std::fs::create_dir_all(&song_root).map_err(|e| fail(format!("creating {}: {e}", song_root.display())))?;
    }
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let count = files.len();
    write_all(files).map_err(fail)?;
    eprintln!(
        "wrote {} songs ({} artists) and {} events from {} users to {} ({count} files, {:.1} MB, seed {})",
        songs.len(),
        artists.len(),
        events.len(),
        users.len(),
        args.out.display(),
        bytes as f64 / 1e6,
        args.seed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_the_sources() {
        assert_eq!(json_string("Café/x \"y\"", false), "\"Caf\\u00e9/x \\\"y\\\"\"");
        assert_eq!(json_string("a/b", true), "\"a\\/b\"");
        assert_eq!(double_encode("é"), "Ã©");
        assert_eq!(float(1540919166796.0), "1540919166796.0");
        assert_eq!(float(218.93179), "218.93179");
    }
}
