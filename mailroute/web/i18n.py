"""The console's own words in Russian and English, chosen by the browser's Accept-Language."""

from __future__ import annotations

LANGUAGES = ("en", "ru")

_RU = {
    "Queue": "Очередь", "Quarantine": "Карантин", "Outbox": "Исходящие",
    "Customers": "Клиенты", "Reports": "Отчёты", "Health": "Состояние",
    "Webhooks": "Вебхуки", "Log out": "Выйти", "Log in": "Войти", "Name": "Имя",
    "Password": "Пароль", "Wrong name or password.": "Неверное имя или пароль.",
    "Too many failed logins; try again later.":
        "Слишком много неудачных входов; попробуйте позже.",
    "Status": "Статус", "Type": "Тип", "Priority": "Приоритет", "Organization": "Организация",
    "Requester": "Заявитель", "Subject": "Тема", "Number": "Номер", "Opened": "Открыта",
    "SLA left": "Осталось по SLA", "overdue": "просрочено", "paused": "на паузе",
    "Breached only": "Только просроченные", "Search": "Поиск", "Filter": "Показать",
    "any": "любой", "from here": "начиная с этой страницы", "First page": "В начало",
    "Next": "Дальше",
    "requests": "заявок", "Nothing found.": "Ничего не найдено.",
    "Letters": "Письма", "Attachments": "Вложения", "Reasons": "Причины",
    "History": "История", "Replies": "Ответы", "From": "От", "Received": "Получено",
    "Change status": "Сменить статус", "Note": "Примечание", "Save": "Сохранить",
    "Add internal note": "Добавить внутреннее примечание", "Resend": "Отправить снова",
    "State": "Состояние", "To": "Кому", "Attempts": "Попытки", "Error": "Ошибка",
    "Retry": "Повторить", "Stage": "Этап", "Due": "Срок", "Sent": "Отправлено",
    "Registration number": "Рег. номер", "Tier": "Уровень", "Aliases": "Другие имена",
    "Domains": "Домены", "Period": "Период", "Created": "Создано", "Resolved": "Решено",
    "Healthy": "Всё в порядке", "Problems": "Проблемы", "Event": "Событие",
    "URL": "Адрес", "Request": "Заявка", "Queue name": "Очередь", "Message count": "Сообщений",
    "Requests a day": "Заявок в день", "Read only: a viewer cannot change requests.":
        "Только чтение: наблюдатель не может менять заявки.",
    "(no text)": "(нет текста)", "First response due": "Срок первого ответа",
    "Resolution due": "Срок решения", "Done.": "Готово.", "Back to the queue": "К очереди",
    "Signed in as": "Вход выполнен:", "Filed": "Отправлено в", "Not found.": "Не найдено.",
    "Forbidden.": "Запрещено.", "Value": "Значение", "Total": "Всего",
}

_CATALOG = {"en": {}, "ru": _RU}


def choose(accept_language: str | None) -> str:
    """The first of our languages the browser asks for (by q-value), English otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LANGUAGES and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else "en"


def translator(language: str) -> dict[str, str]:
    return _CATALOG.get(language, {})


def gettext(catalog: dict[str, str], text: str) -> str:
    return catalog.get(text, text)
