"""A reply states a fact's value whatever its formatting, and never by a near miss."""

from __future__ import annotations

import pytest

from tutorial_lib import data
from tutorial_lib.values import states_value, tokens

STATES = [
    ("The Vessick daypack costs $89.", "$89"),
    ("It is 89 dollars.", "$89"),
    ("It sells for 89 USD.", "$89"),
    ("It sells for $ 89.00 at the moment.", "$89"),
    ("Eighty-nine? No: it costs 89 bucks.", "$89"),
    ("The Corrimook rucksack weighs 1,580 grams.", "1,580"),
    ("It weighs 1580 g.", "1,580"),
    ("It weighs 1580g.", "1,580 grams"),
    ("It tips the scales at 1,580 Grams!", "1,580 grams"),
    ("The Tarnwick Vessick daypack was launched in 2012.", "2012"),
    ("Launched in 2012, it is still sold.", "2012"),
    ("It holds 22 litres.", "22 liters"),
    ("It has a capacity of 22 L.", "22 liters"),
    ("A 22-liter pack.", "22 liters"),
    ("It boils a liter in 4.5 minutes.", "4.5 minutes"),
    ("It boils a liter in 4.50 min.", "4.5 minutes"),
    ("It holds 0.5 liters of water.", "0.5 liters"),
    ("Rated for winds up to 55 km/h.", "55 km/h"),
    ("It withstands 55 kilometers per hour.", "55 km/h"),
    ("It withstands 55 kph.", "55 km/h"),
    ("The battery runs for 18 hours.", "18 hours"),
    ("About 18 hrs on a charge.", "18 hours"),
    ("Products come with a 4-year warranty.", "4 years"),
    ("The warranty lasts four years.", "4 years"),
    ("You have forty-five days to return it.", "45 days"),
    ("Returns are accepted within 45 days of delivery.", "45 days"),
    ("It filters up to 2,000 liters.", "2,000 liters"),
    ("It filters 2000 litres.", "2,000 liters"),
    ("Support is open from 7 a.m. to 7 p.m. Mountain Time.", "7 a.m. to 7 p.m."),
    ("Call us 7am to 7pm.", "7 a.m. to 7 p.m."),
    ("We answer from 7 AM to 7 PM.", "7 a.m. to 7 p.m."),
    ("It has a 350-watt motor.", "350 watts"),
    ("A 350W motor.", "350 watts"),
    ("Tarnwick Trailworks was founded by Maren Ellstrom.", "Maren Ellstrom"),
    ("MAREN ELLSTROM founded it.", "Maren Ellstrom"),
    ("It is headquartered in Bozeman, Montana.", "Bozeman"),
    ("Our head office is in Grand Rapids, MI.", "Grand Rapids"),
    ("The loyalty program is called the Cairn Club.", "Cairn Club"),
    ("Join the cairn-club!", "Cairn Club"),
    ("The mascot is a marmot named Bramble.", "Bramble"),
    ("Free shipping on orders over $75.", "$75"),
]

DOES_NOT = [
    ("The Tarnwick Vessick daypack was launched in 2014.", "2012"),
    ("It weighs 15800 grams.", "1580"),
    ("It weighs 15,800 grams.", "1,580"),
    ("It weighs 1,58 grams.", "1,580"),
    ("It costs $189.", "$89"),
    ("It costs $8.90.", "$89"),
    ("It costs 89 euros.", "$89"),
    ("It weighs 890 grams.", "$89"),
    ("In 20121 nothing happened.", "2012"),
    ("It holds 22 gallons.", "22 liters"),
    ("It boils a liter in 4 minutes.", "4.5 minutes"),
    ("It boils a liter in 5.4 minutes.", "4.5 minutes"),
    ("It holds 5 liters.", "0.5 liters"),
    ("The warranty is 14 years.", "4 years"),
    ("You have 45 hours.", "45 days"),
    ("Support is open from 7 a.m. to 5 p.m.", "7 a.m. to 7 p.m."),
    ("Support is open from 7 p.m. to 7 a.m.", "7 a.m. to 7 p.m."),
    ("It was founded by Maren Ellis.", "Maren Ellstrom"),
    ("The mascot is a marmot named Brambleton.", "Bramble"),
    ("It is called the Cairn Society.", "Cairn Club"),
    ("I don't know.", "$89"),
    ("", "2012"),
]


@pytest.mark.parametrize("reply, value", STATES)
def test_a_reply_that_states_the_value_counts(reply, value):
    assert states_value(reply, value)


@pytest.mark.parametrize("reply, value", DOES_NOT)
def test_a_near_miss_does_not_count(reply, value):
    assert not states_value(reply, value)


def test_normalisation_is_the_same_on_both_sides():
    assert tokens("$1,580.00") == tokens("1580 USD") == ["1580", "dollar"]
    assert tokens("Forty-Five Days") == ["45", "day"]
    assert tokens("0.50") == ["0.5"] and tokens("007") == ["7"]
    assert tokens("1, 2, 3") == ["1", "2", "3"]  # a list, not a thousands separator


def test_an_empty_value_is_an_error():
    with pytest.raises(ValueError, match="nothing to look for"):
        states_value("anything", " ?! ")


@pytest.mark.parametrize("task", data.TASKS)
def test_every_correct_answer_states_its_value_and_no_distractor_does(task):
    for item in data.load_domain_eval(task=task):
        right = item["choices"][item["answer"]]
        assert states_value(right, item["value"]), item["id"]
        for i, choice in enumerate(item["choices"]):
            if i != item["answer"]:
                assert not states_value(choice, item["value"]), (item["id"], choice)
