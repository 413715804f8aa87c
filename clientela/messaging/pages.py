"""Pages a recipient opens from a message (unsubscribe, preferences, survey): in their
language, with the look of the email they came from."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "email": "email",
        "sms": "text message",
        "unsubscribe.title": "Unsubscribe",
        "unsubscribe.ask": "Do you want to stop receiving these messages by {channel}?",
        "unsubscribe.button": "Unsubscribe",
        "unsubscribe.done": "You are unsubscribed: you will not receive these messages by "
        "{channel} any more.",
        "unsubscribe.already": "You were already unsubscribed from these messages by {channel}.",
        "unsubscribe.back": "Changed your mind? Tell us by replying to any of our messages.",
        "invalid.title": "This link does not work",
        "invalid.body": "The link is not valid: it may be incomplete or out of date. Copy the "
        "whole link from the message, or reply to the message and we will help.",
        "survey.title": "How did we do?",
        "survey.ask": "How satisfied are you with how we handled your complaint {id}?",
        "survey.scale": "Choose a number: 1 = very unhappy, 5 = very happy.",
        "survey.comment": "Anything to add? (optional)",
        "survey.send": "Send",
        "survey.choose": "Please choose a number from 1 to 5.",
        "survey.thanks": "Thank you for telling us.",
        "survey.answered": "You have answered already. Thank you.",
        "survey.early": "Your complaint is not resolved yet; we will ask you once it is.",
        "prefs.title": "Your preferences",
        "prefs.intro": "Choose how we may contact you and what about. Changes apply to the "
        "very next message.",
        "prefs.channels": "Contact me by",
        "prefs.topics": "Tell me about",
        "prefs.save": "Save my choices",
        "prefs.saved": "Your choices are saved.",
        "prefs.none": "You will receive no marketing messages from us. Messages about your own "
        "orders and requests still reach you.",
    },
    "es": {
        "email": "correo electrónico",
        "sms": "SMS",
        "unsubscribe.title": "Darse de baja",
        "unsubscribe.ask": "¿Quieres dejar de recibir estos mensajes por {channel}?",
        "unsubscribe.button": "Darme de baja",
        "unsubscribe.done": "Te has dado de baja: ya no recibirás estos mensajes por {channel}.",
        "unsubscribe.already": "Ya te habías dado de baja de estos mensajes por {channel}.",
        "unsubscribe.back": "¿Has cambiado de idea? Dínoslo respondiendo a cualquiera de "
        "nuestros mensajes.",
        "invalid.title": "Este enlace no funciona",
        "invalid.body": "El enlace no es válido: puede estar incompleto o caducado. Copia el "
        "enlace completo del mensaje, o responde al mensaje y te ayudaremos.",
        "survey.title": "¿Qué tal lo hicimos?",
        "survey.ask": "¿Qué tan satisfecho/a estás con cómo atendimos tu reclamación {id}?",
        "survey.scale": "Elige un número: 1 = muy insatisfecho/a, 5 = muy satisfecho/a.",
        "survey.comment": "¿Algo que añadir? (opcional)",
        "survey.send": "Enviar",
        "survey.choose": "Elige un número del 1 al 5.",
        "survey.thanks": "Gracias por contárnoslo.",
        "survey.answered": "Ya nos habías respondido. Gracias.",
        "survey.early": "Tu reclamación aún no está resuelta; te preguntaremos cuando lo esté.",
        "prefs.title": "Tus preferencias",
        "prefs.intro": "Elige cómo podemos contactarte y sobre qué. Los cambios se aplican desde "
        "el próximo mensaje.",
        "prefs.channels": "Contactadme por",
        "prefs.topics": "Contadme sobre",
        "prefs.save": "Guardar mis preferencias",
        "prefs.saved": "Tus preferencias están guardadas.",
        "prefs.none": "No recibirás mensajes comerciales nuestros. Los mensajes sobre tus "
        "pedidos y solicitudes te seguirán llegando.",
    },
}


@lru_cache(maxsize=4)
def _env(directory: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(directory), autoescape=select_autoescape(default=True)
    )


def words(locale: str | None) -> dict[str, str]:
    return WORDS.get((locale or "en").split("-")[0], WORDS["en"])


def render(
    templates_dir: Path, locale: str | None, title: str, *paragraphs: str, **form: Any
) -> str:
    """A page with a title, paragraphs (text, escaped) and optionally a form."""
    lang = (locale or "en").split("-")[0] if (locale or "en").split("-")[0] in WORDS else "en"
    return (
        _env(str(templates_dir))
        .get_template("_pages/page.html")
        .render(
            locale=lang, title=title, paragraphs=paragraphs, form=form.pop("form", None), **form
        )
    )
