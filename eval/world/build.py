"""The world before any text: entities, their facts, and the post-cutoff changes, from one seed.

Entities of each kind are split into a train pool and an eval pool, and every relation stays inside its
pool (a train person works for a train company in a train city), so training examples built from the
train pool never name an entity that an eval question asks about.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from eval.world.config import AS_OF, CUTOFF, EVAL_FRACTION, WorldConfig
from eval.world.model import (
    POOLS,
    Entity,
    Era,
    Fact,
    Kind,
    Pool,
    article,
    date_value,
    name_value,
    number_value,
    phrase_value,
    year_value,
)
from eval.world.names import NameGenerator
from eval.world.templates import (
    CEO_ROLE,
    INDUSTRIES,
    ORG_SUFFIXES,
    ROLES,
    stem_name,
    template_vocabulary,
)


@dataclass(frozen=True, slots=True)
class Change:
    """One post-cutoff news item: what happened, when, and the facts it states, by slot name."""

    kind: str  # a key of templates.NEWS
    date: dt.date
    pool: Pool
    subject: str
    slots: tuple[tuple[str, str], ...]  # (slot, fact id), in the order the news states them


@dataclass
class Timeline:
    entities: list[Entity]
    facts: list[Fact]
    changes: list[Change]
    invalidated: frozenset[str]  # pre facts no longer true that no post fact replaces (a replaced CEO's job)
    # pool -> (kind, name) of subjects that exist nowhere: "eval" for unanswerable questions, "train" for
    # abstention training examples.
    fictitious: dict[Pool, list[tuple[Kind, str]]]
    by_id: dict[str, Entity] = field(init=False, repr=False)
    fact_by_id: dict[str, Fact] = field(init=False, repr=False)
    _pre: dict[tuple[str, str], Fact] = field(init=False, repr=False)
    _post: dict[tuple[str, str], Fact] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {e.id: e for e in self.entities}
        self.fact_by_id = {f.id: f for f in self.facts}
        self._pre, self._post = {}, {}
        for f in self.facts:
            (self._pre if f.era == "pre" else self._post)[(f.subject, f.attr)] = f

    def pre(self, subject: str, attr: str) -> Fact | None:
        return self._pre.get((subject, attr))

    def post(self, subject: str, attr: str) -> Fact | None:
        return self._post.get((subject, attr))

    def current(self, subject: str, attr: str) -> Fact | None:
        """The value that holds on AS_OF, or None where nothing known holds."""
        post = self._post.get((subject, attr))
        if post is not None:
            return post
        pre = self._pre.get((subject, attr))
        return None if pre is None or pre.id in self.invalidated else pre

    def is_retained(self, fact: Fact) -> bool:
        """A pre-cutoff fact still true on AS_OF."""
        return fact.era == "pre" and self.current(fact.subject, fact.attr) is fact


def role_value(role: str) -> tuple[str, tuple[str, ...]]:
    return phrase_value(role, article(role), *(("CEO",) if role == CEO_ROLE else ()))


def random_date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randint(0, (end - start).days))


def split(n: int) -> dict[Pool, int]:
    """The eval pool gets the odd one: it is what the questions measure."""
    return {"train": n // 2, "eval": n - n // 2}


class _Builder:
    def __init__(self, config: WorldConfig) -> None:
        self.spec = config.spec
        # Separate streams, so that a change in one stage does not reshuffle the others.
        self.rng = random.Random(f"keepcurrent-world:{config.seed}:facts")
        self.name_rng = random.Random(f"keepcurrent-world:{config.seed}:names")
        self.names = NameGenerator(self.name_rng, reserved=template_vocabulary())
        self.entities: list[Entity] = []
        self.facts: list[Fact] = []
        self.changes: list[Change] = []
        self.invalidated: list[str] = []
        self.current: dict[tuple[str, str], Fact] = {}
        self._counters: dict[str, int] = {}
        self._used_populations: set[int] = set()
        self._full_names: set[str] = set()
        self._first: list[str] = []
        self._last: list[str] = []

    # -- names and ids -------------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}-{self._counters[prefix]:04d}"

    def _person_name(self) -> str:
        for _ in range(100_000):
            name = f"{self.name_rng.choice(self._first)} {self.name_rng.choice(self._last)}"
            if name not in self._full_names:
                self._full_names.add(name)
                return name
        raise RuntimeError("first and last name pools are too small for the number of people")

    def _stem_name(self, kind: Kind) -> str:
        return stem_name(kind, self.names.word(2), self.name_rng)

    def _entity(self, kind: Kind, pool: Pool, era: Era = "pre", name: str | None = None) -> Entity:
        if name is None:
            name = self._person_name() if kind == "person" else self._stem_name(kind)
        entity = Entity(id=self._next_id(kind), kind=kind, name=name, pool=pool, era=era)
        self.entities.append(entity)
        return entity

    def _entities(self, kind: Kind, n: int) -> dict[Pool, list[Entity]]:
        n_eval = round(n * EVAL_FRACTION)
        eval_pool: list[Pool] = ["eval"]
        train_pool: list[Pool] = ["train"]
        labels = eval_pool * n_eval + train_pool * (n - n_eval)
        pools = self.rng.sample(labels, n)
        made = [self._entity(kind, pool) for pool in pools]
        return {p: [e for e in made if e.pool == p] for p in POOLS}

    # -- facts ---------------------------------------------------------------------------------------

    def _fact(
        self,
        subject: Entity,
        attr: str,
        value: tuple[str, tuple[str, ...]],
        era: Era,
        obj: Entity | None = None,
        entails: tuple[str, ...] = (),
    ) -> Fact:
        replaced = self.current.get((subject.id, attr)) if era == "post" else None
        fact = Fact(
            id=f"fact-{len(self.facts) + 1:05d}",
            subject=subject.id,
            attr=attr,
            value=value[0],
            aliases=value[1],
            era=era,
            obj=obj.id if obj else None,
            replaces=replaced.id if replaced else None,
            entails=entails,
        )
        self.facts.append(fact)
        self.current[(subject.id, attr)] = fact
        return fact

    def _ref(self, subject: Entity, attr: str, obj: Entity, era: Era, entails: tuple[str, ...] = ()) -> Fact:
        return self._fact(subject, attr, name_value(obj), era, obj=obj, entails=entails)

    # -- the world -----------------------------------------------------------------------------------

    def build(self) -> Timeline:
        s, rng = self.spec, self.rng
        countries = [self.names.word(2) for _ in range(s.countries)]
        self._first = [self.names.word(self.name_rng.choice((1, 2)), max_len=6) for _ in range(s.first_names)]
        self._last = [self.names.word(self.name_rng.choice((1, 2)), max_len=6) for _ in range(s.last_names)]

        cities = self._entities("city", s.cities)
        people = self._entities("person", s.people)
        orgs = self._entities("org", s.orgs)
        products = self._entities("product", s.products)
        events = self._entities("event", s.events)
        self._check_feasible(cities, people, orgs)

        # Distinct populations (in thousands), so no two cities share an answer.
        populations = iter(rng.sample(range(20, 2000), s.cities))
        for pool in POOLS:
            for city in cities[pool]:
                self._fact(city, "country", phrase_value(rng.choice(countries)), "pre")
                pop = next(populations)
                self._used_populations.add(pop)
                self._fact(city, "population", number_value(pop * 1000), "pre")

        birth_year: dict[str, int] = {}
        industry: dict[str, tuple[str, str]] = {}
        founded: dict[str, int] = {}
        for pool in POOLS:
            ceos = rng.sample(people[pool], len(orgs[pool]))
            ceo_of = {p.id: o for p, o in zip(ceos, orgs[pool], strict=True)}
            employee_facts: dict[str, tuple[str, str]] = {}
            for person in people[pool]:
                birth_year[person.id] = rng.randint(1940, 1999)
                self._fact(person, "birth_year", year_value(birth_year[person.id]), "pre")
                self._ref(person, "birth_city", rng.choice(cities[pool]), "pre")
                employer = ceo_of.get(person.id) or rng.choice(orgs[pool])
                role = CEO_ROLE if person.id in ceo_of else rng.choice(ROLES)
                emp = self._ref(person, "employer", employer, "pre")
                rol = self._fact(person, "role", role_value(role), "pre")
                employee_facts[person.id] = (emp.id, rol.id)
            founders = rng.sample(people[pool], len(orgs[pool]))
            for org, ceo, founder in zip(orgs[pool], ceos, founders, strict=True):
                industry[org.id] = rng.choice(INDUSTRIES)
                founded[org.id] = min(birth_year[founder.id] + rng.randint(22, 45), 2022)
                self._ref(org, "hq", rng.choice(cities[pool]), "pre")
                self._ref(org, "ceo", ceo, "pre", entails=employee_facts[ceo.id])
                self._ref(org, "founder", founder, "pre")
                self._fact(org, "founded", year_value(founded[org.id]), "pre")
                self._fact(org, "industry", phrase_value(industry[org.id][0]), "pre")
            for product in products[pool]:
                maker = rng.choice(orgs[pool])
                self._ref(product, "maker", maker, "pre")
                self._fact(
                    product,
                    "launched",
                    year_value(rng.randint(max(founded[maker.id] + 1, 1990), 2024)),
                    "pre",
                )
                kind = industry[maker.id][1]
                self._fact(product, "kind", phrase_value(kind, article(kind)), "pre")
            for event in events[pool]:
                organizer = rng.choice(orgs[pool])
                start = max(dt.date(2019, 1, 1), dt.date(founded[organizer.id] + 1, 1, 1))
                self._ref(event, "city", rng.choice(cities[pool]), "pre")
                self._fact(event, "date", date_value(random_date(rng, start, dt.date(2024, 11, 30))), "pre")
                self._ref(event, "organizer", organizer, "pre")

        for pool in POOLS:
            self._post_changes(pool, cities[pool], people[pool], orgs[pool], industry)

        fictitious: dict[Pool, list[tuple[Kind, str]]] = {
            "eval": self._fictitious(s.unanswerable_questions, "eval"),
            "train": self._fictitious(max(8, s.abstain_examples // 2), "train"),
        }
        return Timeline(
            entities=self.entities,
            facts=self.facts,
            changes=sorted(self.changes, key=lambda c: c.date),  # stable: same-day news keep their order
            invalidated=frozenset(self.invalidated),
            fictitious=fictitious,
        )

    def _check_feasible(
        self,
        cities: dict[Pool, list[Entity]],
        people: dict[Pool, list[Entity]],
        orgs: dict[Pool, list[Entity]],
    ) -> None:
        s = self.spec
        for pool in POOLS:
            n_orgs, n_people, n_cities = len(orgs[pool]), len(people[pool]), len(cities[pool])
            org_changes = split(s.ceo_changes)[pool] + split(s.hq_moves)[pool]
            problems = [
                (n_orgs < 2 or n_cities < 2, "each pool needs at least 2 organisations and 2 cities"),
                (n_people < 2 * n_orgs, "each pool needs at least twice as many people as organisations"),
                (org_changes > n_orgs, "more CEO changes + headquarters moves than organisations"),
                (split(s.population_revisions)[pool] > n_cities, "more population revisions than cities"),
                (split(s.job_changes)[pool] > n_people - n_orgs, "more job changes than non-CEO people"),
                (split(s.new_products)[pool] > n_orgs, "more new products than organisations"),
            ]
            for bad, why in problems:
                if bad:
                    raise ValueError(f"size spec is inconsistent in the {pool} pool: {why}")

    def _post_changes(
        self,
        pool: Pool,
        cities: list[Entity],
        people: list[Entity],
        orgs: list[Entity],
        industry: dict[str, tuple[str, str]],
    ) -> None:
        s, rng = self.spec, self.rng

        def when() -> dt.date:
            return random_date(rng, CUTOFF + dt.timedelta(days=1), AS_OF - dt.timedelta(days=1))

        def change(kind: str, date: dt.date, subject: Entity, *slots: tuple[str, Fact]) -> None:
            self.changes.append(Change(kind, date, pool, subject.id, tuple((k, f.id) for k, f in slots)))

        def newcomer(born_from: int, born_to: int) -> tuple[Entity, Fact, Fact]:
            person = self._entity("person", pool, era="post")
            city = self._ref(person, "birth_city", rng.choice(cities), "post")
            year = self._fact(person, "birth_year", year_value(rng.randint(born_from, born_to)), "post")
            return person, city, year

        # Each organisation changes at most one attribute, so every update question has one answer.
        changing_orgs = rng.sample(orgs, split(s.ceo_changes)[pool] + split(s.hq_moves)[pool])
        for org in changing_orgs[: split(s.ceo_changes)[pool]]:
            old = self.current[(org.id, "ceo")]
            assert old.obj is not None
            self.invalidated += [self.current[(old.obj, "employer")].id, self.current[(old.obj, "role")].id]
            person, city, year = newcomer(1955, 1990)
            emp = self._ref(person, "employer", org, "post")
            rol = self._fact(person, "role", role_value(CEO_ROLE), "post")
            ceo = self._ref(org, "ceo", person, "post", entails=(emp.id, rol.id))
            change("ceo_change", when(), org, ("ceo", ceo), ("birth_city", city), ("birth_year", year))
        for org in changing_orgs[split(s.ceo_changes)[pool] :]:
            old_city = self.current[(org.id, "hq")].obj
            hq = self._ref(org, "hq", rng.choice([c for c in cities if c.id != old_city]), "post")
            change("hq_move", when(), org, ("hq", hq))
        for town in rng.sample(cities, split(s.population_revisions)[pool]):
            old_pop = int(self.current[(town.id, "population")].aliases[1])
            new_pop = old_pop
            while new_pop == old_pop or new_pop // 1000 in self._used_populations:
                new_pop = round(old_pop * (1 + rng.choice((-1, 1)) * rng.uniform(0.04, 0.2)) / 1000) * 1000
            self._used_populations.add(new_pop // 1000)
            change(
                "population",
                when(),
                town,
                ("population", self._fact(town, "population", number_value(new_pop), "post")),
            )
        ceo_ids = {self.current[(o.id, "ceo")].obj for o in orgs}
        for person in rng.sample([p for p in people if p.id not in ceo_ids], split(s.job_changes)[pool]):
            old_org = self.current[(person.id, "employer")].obj
            emp = self._ref(person, "employer", rng.choice([o for o in orgs if o.id != old_org]), "post")
            change("job_change", when(), person, ("employer", emp))
        for _ in range(split(s.new_orgs)[pool]):
            founder, city, year = newcomer(1960, 1999)
            org = self._entity("org", pool, era="post")
            date = when()
            industry[org.id] = rng.choice(INDUSTRIES)
            slots: tuple[tuple[str, Fact], ...] = (
                ("founder", self._ref(org, "founder", founder, "post")),
                ("founded", self._fact(org, "founded", date_value(date), "post")),
                ("hq", self._ref(org, "hq", rng.choice(cities), "post")),
                ("industry", self._fact(org, "industry", phrase_value(industry[org.id][0]), "post")),
                ("birth_city", city),
                ("birth_year", year),
            )
            change("new_org", date, org, *slots)
        # One new product per maker, so "what did X launch in 2025?" has one answer.
        for maker in rng.sample(orgs, split(s.new_products)[pool]):
            product = self._entity("product", pool, era="post")
            date = when()
            kind = industry[maker.id][1]
            slots = (
                ("maker", self._ref(product, "maker", maker, "post")),
                ("launched", self._fact(product, "launched", date_value(date), "post")),
                ("kind", self._fact(product, "kind", phrase_value(kind, article(kind)), "post")),
            )
            change("new_product", date, product, *slots)
        for _ in range(split(s.new_events)[pool]):
            event = self._entity("event", pool, era="post")
            date = when()
            slots = (
                ("city", self._ref(event, "city", rng.choice(cities), "post")),
                ("date", self._fact(event, "date", date_value(date), "post")),
                ("organizer", self._ref(event, "organizer", rng.choice(orgs), "post")),
            )
            change("new_event", date, event, *slots)

    def _fictitious(self, n: int, pool: Pool) -> list[tuple[Kind, str]]:
        # People are built from the real first and last name pools and organisations from real stems with
        # another suffix ("Kelvor Motors" beside "Kelvor Dynamics"): only the combination is unknown, so
        # an unfamiliar-looking name is no cue to abstain.
        kinds: tuple[Kind, ...] = ("person", "person", "org", "city", "product")
        taken = {e.name for e in self.entities}  # membership only
        stems = [e.name.split(" ")[0] for e in self.entities if e.kind == "org" and e.pool == pool]
        out: list[tuple[Kind, str]] = []
        for i in range(n):
            kind = kinds[i % len(kinds)]
            if kind == "person":
                name = self._person_name()
            elif kind == "org":
                candidates = [f"{s} {x}" for s in stems for x in ORG_SUFFIXES if f"{s} {x}" not in taken]
                name = self.name_rng.choice(candidates) if candidates else self._stem_name(kind)
            else:
                name = self._stem_name(kind)
            taken.add(name)
            out.append((kind, name))
        return out


def build_timeline(config: WorldConfig) -> Timeline:
    """Entities, facts and post-cutoff changes of the world `config` describes."""
    return _Builder(config).build()
