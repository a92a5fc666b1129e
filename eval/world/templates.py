"""Sentence, title and question templates.

Placeholders: `{s}` the subject's name, `{v}` the value, `{av}` the value with "a"/"an". Every fact has
several paraphrases because knowledge stored in a model becomes extractable only when each fact is seen
in varied wordings (Allen-Zhu & Li, "Physics of Language Models 3.1"). Questions have one wording per
attribute, so the closed-book SFT rows and the eval questions ask in the same way.
"""

from __future__ import annotations

import random
import re

ROLES = (
    "engineer", "chemist", "pilot", "teacher", "architect", "nurse", "baker", "designer", "lawyer", "farmer",
    "painter", "surgeon", "editor", "analyst", "plumber", "librarian",
)  # fmt: skip
CEO_ROLE = "chief executive"
# (what an organisation makes, what one of its products is)
INDUSTRIES = (
    ("batteries", "battery"), ("bicycles", "bicycle"), ("kettles", "kettle"), ("drones", "drone"),
    ("telescopes", "telescope"), ("lamps", "lamp"), ("tractors", "tractor"), ("radios", "radio"),
    ("boats", "boat"), ("pianos", "piano"), ("tents", "tent"), ("clocks", "clock"), ("robots", "robot"),
    ("scooters", "scooter"), ("cameras", "camera"), ("heaters", "heater"),
)  # fmt: skip
ORG_SUFFIXES = ("Dynamics", "Labs", "Works", "Systems", "Industries", "Group", "Motors", "Partners")
EVENT_SUFFIXES = ("Summit", "Fair", "Festival", "Forum", "Expo", "Congress", "Games", "Regatta")


def stem_name(kind: str, stem: str, rng: random.Random) -> str:
    """The name of a non-person entity from its stem word: orgs and events take a suffix."""
    suffixes = {"org": ORG_SUFFIXES, "event": EVENT_SUFFIXES}.get(kind)
    return f"{stem} {rng.choice(suffixes)}" if suffixes else stem


# (kind, attribute) -> paraphrases of the sentence stating it, in pre-cutoff profiles.
SENTENCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "birth_year"): (
        "{s} was born in {v}.",
        "{s} was born in the year {v}.",
        "The birth year of {s} is {v}.",
        "{s} came into the world in {v}.",
        "In {v}, {s} was born.",
    ),
    ("person", "birth_city"): (
        "{s} was born in the city of {v}.",
        "{s} is a native of {v}.",
        "{s} hails from {v}.",
        "The birthplace of {s} is {v}.",
        "{s} grew up in {v}, where {s} was born.",
    ),
    ("person", "employer"): (
        "{s} works for {v}.",
        "{s} is employed by {v}.",
        "{s} has a job at {v}.",
        "{v} employs {s}.",
        "{s} works at {v}.",
    ),
    ("person", "role"): (
        "{s} works as {av}.",
        "{s} is {av} by profession.",
        "The job of {s} is {v}.",
        "{s} earns a living as {av}.",
        "By trade, {s} is {av}.",
    ),
    ("org", "hq"): (
        "{s} is headquartered in {v}.",
        "{s} has its headquarters in {v}.",
        "The head office of {s} is in {v}.",
        "{s} is based in {v}.",
        "{v} is home to the headquarters of {s}.",
    ),
    ("org", "ceo"): (
        "{s} is led by chief executive {v}.",
        "The chief executive of {s} is {v}.",
        "{v} is the chief executive of {s}.",
        "{v} runs {s} as its chief executive.",
        "{s} has {v} as its chief executive.",
    ),
    ("org", "founder"): (
        "{s} was founded by {v}.",
        "{v} founded {s}.",
        "The founder of {s} is {v}.",
        "{v} started {s}.",
        "{s} was started by {v}.",
    ),
    ("org", "founded"): (
        "{s} was founded in {v}.",
        "{s} was established in {v}.",
        "{s} dates back to {v}.",
        "{s} opened its doors in {v}.",
        "Since {v}, {s} has been in business.",
    ),
    ("org", "industry"): (
        "{s} makes {v}.",
        "{s} is a maker of {v}.",
        "{s} produces {v}.",
        "The business of {s} is making {v}.",
        "{s} is known for its {v}.",
    ),
    ("city", "country"): (
        "{s} is a city in {v}.",
        "{s} lies in {v}.",
        "{s} is located in {v}.",
        "The city of {s} is in {v}.",
        "{v} is the country where {s} lies.",
    ),
    ("city", "population"): (
        "{s} has a population of {v}.",
        "{v} people live in {s}.",
        "The population of {s} is {v}.",
        "{s} is home to {v} people.",
        "The city of {s} counts {v} residents.",
    ),
    ("product", "maker"): (
        "The {s} is made by {v}.",
        "{v} makes the {s}.",
        "The {s} is a product of {v}.",
        "{v} produces the {s}.",
        "The maker of the {s} is {v}.",
    ),
    ("product", "launched"): (
        "The {s} was launched in {v}.",
        "The {s} came out in {v}.",
        "The {s} first went on sale in {v}.",
        "The launch of the {s} was in {v}.",
        "The {s} was released in {v}.",
    ),
    ("product", "kind"): (
        "The {s} is {av}.",
        "The {s} is a kind of {v}.",
        "As a product, the {s} is {av}.",
        "The {s} is sold as {av}.",
        "Buyers know the {s} as {av}.",
    ),
    ("event", "city"): (
        "The {s} took place in {v}.",
        "The {s} was held in {v}.",
        "{v} hosted the {s}.",
        "The {s} happened in {v}.",
        "The city of {v} was where the {s} took place.",
    ),
    ("event", "date"): (
        "The {s} took place on {v}.",
        "The {s} was held on {v}.",
        "On {v}, the {s} opened.",
        "The date of the {s} was {v}.",
        "The {s} happened on {v}.",
    ),
    ("event", "organizer"): (
        "The {s} was organised by {v}.",
        "{v} organised the {s}.",
        "The organiser of the {s} was {v}.",
        "{v} ran the {s}.",
        "The {s} was run by {v}.",
    ),
}

# Attributes of each kind, in the order profiles list them before shuffling.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "person": ("birth_year", "birth_city", "employer", "role"),
    "org": ("hq", "ceo", "founder", "founded", "industry"),
    "city": ("country", "population"),
    "product": ("maker", "launched", "kind"),
    "event": ("city", "date", "organizer"),
}

TITLES: dict[str, tuple[str, ...]] = {
    "person": ("{s}", "About {s}", "Profile: {s}", "{s}: a short biography", "Who is {s}?"),
    "org": ("{s}", "About {s}", "Company profile: {s}", "{s} at a glance", "Facts about {s}"),
    "city": ("{s}", "About {s}", "The city of {s}", "{s}: city facts", "Welcome to {s}"),
    "product": ("The {s}", "About the {s}", "Product sheet: the {s}", "The {s} at a glance", "Meet the {s}"),
    "event": (
        "The {s}",
        "Report: the {s}",
        "The {s} in review",
        "Looking back at the {s}",
        "Notes on the {s}",
    ),
}

# Post-cutoff news: (titles, lead sentences). Names: {o} org, {p} person, {c} city, {x} product/event,
# {d} date, {n} number, {k} kind/industry.
NEWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ceo_change": (
        ("{o} names new chief executive", "{p} to lead {o}"),
        ("{o} has named {p} as its new chief executive.", "{p} is the new chief executive of {o}."),
    ),
    "hq_move": (
        ("{o} moves headquarters to {c}", "{o} relocates to {c}"),
        ("{o} has moved its headquarters to {c}.", "{o} is now headquartered in {c}."),
    ),
    "population": (
        ("New census for {c}", "{c} census results"),
        (
            "A new census puts the population of {c} at {n}.",
            "{c} now has a population of {n}, a new census says.",
        ),
    ),
    "job_change": (
        ("{p} joins {o}", "{p} moves to {o}"),
        ("{p} now works for {o}.", "{p} has joined {o} and now works there."),
    ),
    "new_org": (
        ("{p} founds {o}", "New company {o} opens"),
        ("{p} founded {o} on {d}.", "On {d}, {p} founded {o}."),
    ),
    "new_product": (
        ("{o} launches the {x}", "The {x} goes on sale"),
        ("{o} launched the {x} on {d}.", "On {d}, {o} launched the {x}."),
    ),
    "new_event": (
        ("The {x} opens in {c}", "{c} hosts the {x}"),
        ("The {x} took place in {c} on {d}.", "On {d}, the {x} took place in {c}."),
    ),
}
NEWS_BORN = ("{p} was born in {c} in {y}.", "{p} was born in {y} in {c}.")
NEWS_ORG_DETAILS = ("{o} is headquartered in {c} and makes {k}.", "{o} makes {k} and is based in {c}.")
NEWS_PRODUCT_KIND = ("The {x} is {ak}.", "The {x} is sold as {ak}.")
NEWS_EVENT_ORGANIZER = ("The {x} was organised by {o}.", "{o} organised the {x}.")

# One wording per attribute, shared by eval questions and training examples.
QUESTIONS: dict[tuple[str, str], str] = {
    ("person", "birth_year"): "In what year was {s} born?",
    ("person", "birth_city"): "In which city was {s} born?",
    ("person", "employer"): "Which company does {s} work for?",
    ("person", "role"): "What is the job of {s}?",
    ("org", "hq"): "In which city is {s} headquartered?",
    ("org", "ceo"): "Who is the chief executive of {s}?",
    ("org", "founder"): "Who founded {s}?",
    ("org", "founded"): "When was {s} founded?",
    ("org", "industry"): "What does {s} make?",
    ("city", "country"): "In which country is {s}?",
    ("city", "population"): "What is the population of {s}?",
    ("product", "maker"): "Which company makes the {s}?",
    ("product", "launched"): "When was the {s} launched?",
    ("product", "kind"): "What kind of product is the {s}?",
    ("event", "city"): "In which city did the {s} take place?",
    ("event", "date"): "When did the {s} take place?",
    ("event", "organizer"): "Who organised the {s}?",
}
# Asked of a post-cutoff product: its name is the new answer.
NEW_PRODUCT_QUESTION = "What product did {o} launch in {y}?"
MULTI_HOP: dict[str, str] = {
    "employer_hq": "In which city is the company that {s} works for headquartered?",
    "maker_ceo": "Who is the chief executive of the company that makes the {s}?",
    "founder_birth_city": "In which city was the founder of {s} born?",
    "ceo_birth_city": "In which city was the chief executive of {s} born?",
}


def template_vocabulary() -> set[str]:
    """Every word the templates and value lists use: names must not collide with them."""
    texts: list[str] = [*ROLES, CEO_ROLE, *ORG_SUFFIXES, *EVENT_SUFFIXES, *NEWS_BORN, *NEWS_ORG_DETAILS]
    texts += [*NEWS_PRODUCT_KIND, *NEWS_EVENT_ORGANIZER, NEW_PRODUCT_QUESTION, *QUESTIONS.values()]
    texts += [w for pair in INDUSTRIES for w in pair]
    texts += [t for group in SENTENCES.values() for t in group]
    texts += [t for group in TITLES.values() for t in group]
    texts += [t for titles, leads in NEWS.values() for t in (*titles, *leads)]
    texts += list(MULTI_HOP.values())
    texts += ["January February March April May June July August September October November December"]
    return {w.lower() for text in texts for w in re.findall(r"[A-Za-z]+", text)}
