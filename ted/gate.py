"""The lesson gate: what may become a lesson, decided the same way on every path.

Lessons end up in other agents' system prompts, so a lesson is data that acts like an
instruction: whoever gets a sentence into a library speaks to every agent that reads it.
Every text that enters a library — added by an agent or a person, proposed by the teacher in a
critique or a compression, imported from a file, restored by a rollback — passes `Store.apply`,
which runs this gate (and then the optional guard model) before anything is written. The
teacher's paths, which report a refused lesson instead of failing, call `check` first.

1. **Normalise** (`normalise`): Unicode NFKC (fullwidth letters and colons become plain
   ones); zero-width, bidi, soft-hyphen and other invisible or control characters removed;
   all whitespace one space, so a lesson is one line; markdown headings, list and quote
   markers and bracketed ids (`[E99]`) defused, so nothing in a lesson looks like the start
   of another lesson or a section of the prompt.
2. **Refuse** (`check`) what addresses the agent or its tools rather than the task domain:
   secrets and environment variables, URLs, domains and addresses however written (defanged,
   spaced, e-mail, IP), chat role markers and control tokens, attempts to override the
   agent's instructions or talk about its prompt, this server's tool names and generic
   tool, file or shell instructions, encoded blobs and markup; and lessons that copy a long
   span of the task, the attempts, the answers or the ground truths they were distilled
   from. Matching runs on a folded view (lower case, look-alike Cyrillic letters mapped to
   Latin), and the phrases most used to slip past filters also on a squashed view (letters
   and digits only, leetspeak undone), so `i g n o r e`, `API-KEY` and `ѕуѕtem prompt` are
   caught like their plain spellings.

What rules cannot judge is left to the guard model (`ted.guard`), off unless configured.
"""

import re
import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

MAX_LESSON_CHARS = 800
# A lesson sharing this many consecutive words with a source copies it; a shorter source
# (a ground truth, an answer) is a copy when all of its words, at least SHORT_SOURCE_WORDS
# of them, appear in the lesson in a row.
COPIED_SPAN_WORDS = 12
SHORT_SOURCE_WORDS = 6

# The tools of this server (and those planned), named in any identifier style.
TOOL_NAMES = (
    "get_experiences",
    "record_attempt",
    "add_experience",
    "list_libraries",
    "rollback_library",
    "request_critique",
    "compress_library",
    "distill_batch",
    "get_job",
    "cancel_job",
    "list_jobs",
    "remove_experience",
    "edit_experience",
    "delete_library",
    "promote_version",
    "measure_evidence",
)


class Refusal(NamedTuple):
    """Why a lesson may not be stored. `content` refusals are about what it says (a person may
    approve one from quarantine); the others (empty, too long) no review can fix."""

    reason: str
    content: bool = True


# ---- normalising -----------------------------------------------------------------------------

# Invisible characters: Unicode's format (Cf: zero-width, bidi, soft hyphen…), control (Cc),
# private-use, unassigned and surrogate code points, plus the variation selectors and the
# combining grapheme joiner (Mn, but they render as nothing).
_INVISIBLE_CATEGORIES = {"Cf", "Cc", "Co", "Cn", "Cs"}
_INVISIBLE_MARKS = {0x034F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
_HEADING = re.compile(r"(?:(?<=\s)|^)#{1,6}(?=\s)")
_QUOTE_OR_BULLET = re.compile(r"^(?:[>*+•·-]+\s+|\d{1,9}[.)]\s+)")
_BRACKETED_ID = re.compile(r"[\[(<{【〔〖〘〚]\s*([Ee]\s*\d{1,12})\s*[\])>}】〕〗〙〛]")


def _visible(ch: str) -> bool:
    return unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ord(ch) not in _INVISIBLE_MARKS


def normalise(text: str) -> str:
    """The text as it is stored and served: NFKC, no invisible characters, one line, no markup
    that could pass for another lesson or a heading. Idempotent."""
    previous = None
    while previous != text:  # a removal can make something new: "e\u200b\u0301" composes to "é"
        previous = text
        text = unicodedata.normalize("NFKC", text)
        # Whitespace first (newlines and tabs are control characters), then the invisible rest.
        text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or _visible(ch))
        text = " ".join(text.split())
        text = _HEADING.sub("", text)
        text = _QUOTE_OR_BULLET.sub("", text.strip())
        text = _BRACKETED_ID.sub(lambda m: m.group(1).replace(" ", "").upper(), text)
        text = " ".join(text.split())
    return text


# ---- views of a text for matching -------------------------------------------------------------

# Cyrillic and Greek capitals and small letters that look like Latin ones; mapped only for
# matching, so the stored text keeps its alphabet. Greek small letters are left alone: π, α, θ
# are mathematics.
_LOOKALIKES = str.maketrans(
    "аеорсуххіїјѕԁһӏԛԝɡаАВЕКМНОРСТХІЈЅԜΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxxiijsdhlqwgaabekmhopctxijswabezhikmnoptyx",
)
_LEET = str.maketrans("013457@$|!", "oieastasli")
_DOTS = str.maketrans({"。": ".", "｡": ".", "︒": ".", "․": ".", "‧": "."})


def _fold(text: str) -> str:
    return text.translate(_LOOKALIKES).lower().translate(_DOTS)


def _squash(folded: str) -> str:
    return re.sub(r"[^a-z]", "", folded.translate(_LEET))


# ---- what a lesson must not say --------------------------------------------------------------

_SECRETS = "asks for secrets, keys or environment variables"
_URL = "contains a URL, domain or address; lessons must not send the agent anywhere"
_ROLE = "contains a chat role marker or control token"
_OVERRIDE = "tries to override the agent's instructions"
_PROMPT = "talks to the agent about its own prompt, instructions or conversation"
_TOOLS = "tells the agent to use tools, files or shell commands, or this server's own tools"
_BLOB = "contains an encoded blob (base64, hex or escape sequences); lessons are plain sentences"
_MARKUP = "contains markup (HTML tags, markdown links or code fences); lessons are plain sentences"
_MIXED = "mixes alphabets inside a word, a way to hide words from checks"


def _any(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


_W = r"(?:[\w'’-]+\W+)"  # one word and what follows it
_SECRET_NOUN = _any(
    r"passw(?:or)?ds?",
    "passphrases?",
    "credentials?",
    r"(?:api|access|auth|bearer|session|refresh|ssh)[\s_-]*(?:keys?|tokens?)",
    r"(?:session|auth|browser|login)\s+cookies?",
    r"seed[\s_-]*phrases?",
    r"\.env\b",
    r"env(?:ironment)?[\s_-]*var(?:iable)?s?",
)
# Verbs that hand something over; "list", "count" or "find" stay free for combinatorics.
_REQUEST_VERB = _any(
    "reveal",
    "print",
    "repeat",
    "recite",
    "show",
    "display",
    "output",
    "echo",
    "send",
    "share",
    "post",
    "upload",
    "leak",
    "dump",
    "paste",
    "include",
    "expose",
    "tell",
    "give",
    "provide",
    "cat",
    "type",
    "enter",
    "copy",
    "collect",
    "harvest",
    "steal",
    "grab",
    "extract",
    "exfiltrate",
    "ask",
    "request",
    "demand",
    "look up",
    "fetch",
    "retrieve",
    "e-?mail",
    "mail",
    "forward",
    "transmit",
    "submit",
)
_SECRET_RULES = [
    # An environment variable by its name (OPENAI_API_KEY, TED_HTTP_TOKEN), its shell forms
    # ($X_Y, ${X}, %X%) or the ways programs read them.
    re.compile(
        r"\b(?:[A-Z][A-Z0-9]*_)+(?:API_?)?(?:KEY|TOKEN|SECRET|PASS(?:WORD)?|PWD|CREDENTIALS?|AUTH)S?\b|\bAPI_?KEYS?\b"
    ),
    re.compile(
        r"\b(?:TED|AWS|OPENAI|ANTHROPIC|OPENROUTER|GITHUB|GH|HF|AZURE|GOOGLE|GCP|SLACK|STRIPE)_[A-Z0-9_]+\b"
        r"|\$\{[^}]{1,64}\}|\$[A-Z][A-Z0-9]*_[A-Z0-9_]+|%[A-Z][A-Z0-9_]{2,}%"
    ),
]
_SECRET_FOLDED = [
    re.compile(
        r"\b(?:api|access|auth|bearer|session|refresh)[\s_-]*(?:keys?|tokens?)\b|\bapikeys?\b"
        r"|\benv(?:ironment)?[\s_-]*var(?:iable)?s?\b|\b(?:os\.environ|os\.getenv|getenv|process\.env|printenv|dotenv)"
        r"|/proc/|\.env\b|~/\.|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws/|\.netrc\b|\.pem\b|/etc/(?:passwd|shadow)"
        r"|\bkeychain\b|\bkeyring\b|\b(?:collect|harvest|steal|grab|extract|exfiltrate|record|log)\s+(?:\w+\s+){0,2}"
        r"(?:user|personal|private|customer)\s+(?:data|information|details)\b"
    ),
    re.compile(rf"\b{_REQUEST_VERB}\b\W+{_W}{{0,8}}?{_SECRET_NOUN}"),
    re.compile(
        rf"\b(?:your|the (?:user|agent|server|client|operator|system|host)'?s?|their|its|my|our)\s+{_W}{{0,2}}?"
        rf"(?:{_SECRET_NOUN}|(?:private|secret|signing|encryption)\s+keys?|secrets)"
    ),
]
_SECRET_SQUASHED = ("apikey", "accesstoken", "authtoken", "bearertoken", "environmentvariable", "printenv", "osenviron")

_TLDS = set(
    "com net org info biz edu gov mil int arpa io ai app dev xyz top zip mov lol click link site online store club "
    "space fun live one run tech zone page cloud blog shop art icu vip win bid loan work party review trade date "
    "racing download stream host website press news email digital network systems solutions services agency "
    "center world today life guru ninja rocks social media tools wiki pro name mobi asia cat jobs tel travel "
    "museum coop aero xxx game games casino bet poker fit kim men ooo pics pink red blue black green gold ink lat "
    "ltd llc inc moe nyc paris berlin london tokyo onion bit eth crypto nft wtf sbs cfd rest bar beauty hair quest "
    "cyou monster buzz skin homes autos boats yachts mom lat help support chat bot codes software fyi exposed "
    "gdn loans men surf tube video movie film photo photos academy community company computer consulting "
    "directory domains education email engineering enterprises equipment events exchange expert finance "
    "financial foundation fund global group holdings house international investments land lighting limited "
    "management marketing money partners place plus properties reviews school science security shopping "
    "software studio supply team technology tips town university ventures vision xin".split()
)
# Two-letter endings that are file extensions far more often than country domains in a lesson.
_FILE_ENDINGS = {"py", "md", "js", "ts", "rs", "rb", "cs", "cc", "hs", "ml", "pl", "pm", "ps", "db", "gz", "xz", "so"}
# Two-letter endings that are English words: "value.It" is a missing space, not Italy.
_WORD_ENDINGS = {"it", "is", "so", "at", "be", "by", "in", "me", "my", "no", "to", "us", "am", "as", "do", "go", "he"}
_HOST = re.compile(r"\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+)([a-z][a-z0-9-]{0,23}[a-z])\b(/|:\d|\?)?")
_URL_RULES = [
    re.compile(r"\b[a-z][a-z0-9+.-]{1,20}\s*:\s*/\s*/|\b(?:javascript|vbscript|mailto|file|data)\s*:\s*[\w/]"),
    re.compile(r"\bh(?:xx|\*\*|tt)ps?\b|\[\s*\.\s*\]|\(\s*\.\s*\)|\{\s*\.\s*\}|[\[({]\s*dot\s*[\])}]|\[\s*:\s*/*\s*\]"),
    re.compile(r"\bwww\d?\s*\.|\b(?:\d{1,3}\.){3}\d{1,3}\b|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    re.compile(r"\b(?:webhooks?|pastebin|ngrok|requestbin|interactsh|burp\s*collaborator|exfiltrat\w*|beacon)\b"),
    re.compile(r"\b(?:dot|\.)\s+(?:com|net|org|io|ai|ru|cn|xyz|zip|info|biz|dev|app|top|site|online)\b"),
]

_ROLE_RULES = [
    re.compile(
        r"(?:^|[.!?;:]\s+|\s[-–—|]\s|[\"'(\[])\W{0,3}(?:system|assistant|user|developer|human|ai|tool|admin"
        r"|administrator)(?:\s+(?:message|prompt|note|override|notice|instruction))?\s*[:>]"
    ),
    re.compile(
        r"<\|[^|>]{1,40}\|>|\[/?(?:inst|sys|system|assistant|user|admin)\]|<</?sys>>|<\s*/?\s*(?:system|assistant"
        r"|user|developer|instructions?)\s*>|#{0,6}\s*\b(?:begin|end)\s+(?:system|admin|instructions?)\b"
        r"|\bnew\s+(?:system\s+)?polic(?:y|ies)\b|\bpolicy\s+update\b|\badmin(?:istrator)?\s+override\b"
    ),
]
_ROLE_SQUASHED = ("imstart", "imend", "endoftext", "startofturn", "endofturn")

_OVERRIDE_VERB = _any(
    "ignore",
    "disregard",
    "forget",
    "override",
    "overrule",
    "bypass",
    "circumvent",
    "discard",
    "abandon",
    "set aside",
    r"pay\s+no\s+(?:attention|heed|mind)\s+to",
    r"stop\s+(?:following|obeying)",
    r"(?:do\s+not|don't|no\s+longer)\s+(?:follow|obey|heed)",
    "supersede",
    "throw out",
    "wipe",
    "erase",
)
_OVERRIDE_OBJECT = _any(
    "instructions?",
    "guidance",
    "guidelines?",
    "rules?",
    "directions?",
    "directives?",
    "prompts?",
    "messages?",
    "polic(?:y|ies)",
    "orders?",
    "restrictions?",
    "safeguards?",
    "safety",
    "filters?",
    "everything",
    "anything",
    "all of (?:that|this|it)",
    r"what\s+(?:you\s+(?:were|have\s+been|are)|was)\s+(?:told|given|said|instructed)",
    "the above",
)
_OVERRIDE_QUALIFIER = _any(
    "previous(?:ly)?",
    "prior",
    "above",
    "earlier",
    "before",
    "preceding",
    "original",
    "initial",
    "existing",
    "all",
    "any",
    "other",
    "your",
    "these",
    "those",
    "old",
    "system",
    "developer",
)
_OVERRIDE_TAIL = _any(
    r"(?:that|which)\s+(?:came|come|went|were|was)\s+(?:before|earlier|first|above)",
    "above",
    "earlier",
    r"before(?:\s+(?:this|now|it))?",
    "previously",
    r"so\s+far",
    r"until\s+now",
    r"up\s+to\s+now",
    r"you\s+(?:were|have\s+been)\s+(?:given|told)",
    r"you\s+received",
)
_OVERRIDE_RULES = [
    re.compile(rf"\b{_OVERRIDE_VERB}\b\W+{_W}{{0,4}}?{_OVERRIDE_QUALIFIER}\b\W+{_W}{{0,3}}?{_OVERRIDE_OBJECT}\b"),
    re.compile(rf"\b{_OVERRIDE_VERB}\b\W+{_W}{{0,3}}?{_OVERRIDE_OBJECT}\b\W+{_W}{{0,3}}?{_OVERRIDE_TAIL}\b"),
    re.compile(
        rf"\b{_OVERRIDE_QUALIFIER}\s+{_W}{{0,2}}?{_OVERRIDE_OBJECT}\s+{_W}{{0,4}}?(?:no\s+longer\s+appl|(?:are|is)\s+"
        r"(?:now\s+)?(?:void|obsolete|cancell?ed|revoked|superseded|outdated|invalid|null|wrong|fake)|do(?:es)?\s+not"
        r"\s+apply|don't\s+apply|(?:can|should|must|may)\s+be\s+ignored|as\s+(?:void|obsolete|invalid|cancell?ed|superseded"
        r"|outdated|irrelevant|optional|suggestions|null))"
    ),
    re.compile(
        r"\b(?:new|updated|real|true|hidden|secret|revised|actual)\s+(?:system\s+)?instructions?\b|\byou\s+are\s+now\b"
        r"|\byou're\s+now\b|\bfrom\s+now\s+on,?\s+(?:you|always|never|ignore|respond|reply|answer)\b"
        r"|\b(?:act|behave|respond|operate)\s+as\s+(?:an?\s+|the\s+)?(?:unrestricted|unfiltered|jailbroken|evil|dan|admin"
        r"|administrator|superuser|sysadmin|root|developer|system|operator|different)\b"
        r"|\b(?:assistants?|agents?|models?|ai|llms?|bots?)\s+(?:who\s+(?:is|are)\s+)?(?:reading|seeing|processing|receiving)"
        r"\s+this\b|\bpretend\s+(?:to\s+be|you\s+are)\b|\broleplay\s+as\b"
        r"|\bdo\s+anything\s+now\b|\bjailbr(?:ea|o)k|\bpwn(?:ed|d)?\b|\byour\s+(?:true|real|actual|hidden|secret|new)"
        r"\s+(?:goal|purpose|task|objective|mission|role|job)\b|\b(?:developer|god|sudo|dan|unrestricted)\s+mode\b"
    ),
]
# The same override in the languages it is most often written in.
_FOREIGN_OVERRIDE = re.compile(
    r"\b(?:ignor\w*|olvid\w*|oubli\w*|vergiss\w*|dimentic\w*|esquec\w*|negeer\w*|zignoruj\w*)\b.{0,60}"
    r"\b(?:instrucc\w*|instru[cç][ãa]o\w*|instru[cç][õo]es|consignes?|anweisung\w*|istruzion\w*|instructies"
    r"|instrukcj\w*|reglas|r[eè]gles|regeln|regole|regras)\b"
)
_OVERRIDE_SQUASHED = (
    "ignorepreviousinstructions",
    "ignoreallpreviousinstructions",
    "ignorepriorinstructions",
    "ignoreallinstructions",
    "ignoreallprevious",
    "ignoretheabove",
    "disregardpreviousinstructions",
    "disregardallprevious",
    "disregardtheabove",
    "forgetpreviousinstructions",
    "forgetallpreviousinstructions",
    "forgeteverythingabove",
    "overrideyourinstructions",
)
_NEGATED = re.compile(r"\b(?:not|never|n't|without|cannot)\s+$")

_PROMPT_RULES = [
    re.compile(
        r"\bsystem[\s_-]*(?:prompt|message|instructions?)\b|\bdeveloper[\s_-]*(?:message|prompt|instructions?)\b"
        r"|\byour\s+(?:\w+\s+)?(?:prompt|instructions|programming|configuration|training|memory|context\s+window"
        r"|guidelines|directives)\b|\b(?:hidden|initial|original|internal|pre-?)\s*prompt\b"
        r"|\b(?:conversation|chat|message)\s+(?:history|log|so\s+far)\b|\b(?:previous|earlier|prior|other)\s+"
        r"(?:messages|conversations|chats|turns)\b|\bthe\s+user'?s\s+(?:messages|data|files|conversation|documents)\b"
    ),
    re.compile(
        rf"\b{_REQUEST_VERB}\b\W+{_W}{{0,3}}?(?:the\s+)?(?:system|initial|original|hidden|full|above|developer|first)"
        r"\s+(?:\w+\s+)?(?:prompt|instructions|context|message)s?\b"
    ),
    re.compile(
        rf"\b{_REQUEST_VERB}\b\W+(?:back\s+)?(?:everything|all|anything|the\s+(?:text|words)|whatever)\s+{_W}{{0,2}}?"
        r"(?:written|said|above|before|preceding|earlier|given|you\s+(?:see|saw|read|were\s+given))\b"
    ),
]
_PROMPT_SQUASHED = ("systemprompt", "developermessage", "repeatyourinstructions", "printyourinstructions")

_TOOL_IDENTIFIERS = re.compile(
    r"\b(?:" + "|".join(r"[\s_-]?".join(re.escape(part) for part in name.split("_")) for name in TOOL_NAMES) + r")\b"
)
_TOOL_RULES = [
    # This server's own library and job machinery.
    re.compile(
        "|".join(
            [
                r"\b(?:this|these|every|all|each|other|the\s+other)\s+(?:\w+\s+)?(?:lessons?|experiences)\b",
                r"\b(?:every|all|each|other|another)\s+(?:experience\s+)?librar(?:y|ies)\b",
                r"\bexperience\s+(?:librar|prompt)|\blesson\s+(?:librar|ids?\b)",
                rf"\broll(?:ing)?[\s-]*back\b\W+{_W}{{0,3}}?(?:librar|lessons?|versions?|experiences)",
                r"\bcancel\w*\s+(?:\w+\s+){0,2}(?:jobs?|distillations?)\b|\bdelete\s+(?:\w+\s+){0,2}(?:librar|lessons)",
                r"\b(?:overwrite|replace|remove|delete|edit|rewrite|erase|clear|drop|wipe|keep|protect|pin)\s+"
                r"(?:\w+\s+){0,3}(?:lessons?|experiences)\b",
                rf"\b(?:add|copy|insert|append|write|paste|replicate|propagate|spread|inject)\s+{_W}{{0,4}}?"
                rf"(?:lessons?|experiences?|rules?|instructions?|text|sentence|this)\s+{_W}{{0,3}}?(?:into|to|in)\s+"
                rf"{_W}{{0,2}}?(?:librar|every|all|each|other)",
            ]
        )
    ),
    # Tools, plugins and function calls of the agent itself.
    re.compile(
        r"\b(?:your|the\s+agent'?s|available|mcp|connected|external|installed|its)\s+(?:\w+\s+)?(?:tools?|functions|plugins?"
        r"|integrations?|capabilities)\b|\btool[\s_-]*(?:calls?|use|invocations?)\b|\bfunction[\s_-]*calls?\b"
        r"|\b(?:call|invoke|execute|trigger)\s+(?:the\s+|a\s+|an\s+|any\s+)?[\w-]+[\s_-]+(?:tool|function|endpoint|api)\b"
        r"|\bmcp\b|\b(?:use|call|invoke|run|open|launch|trigger)\s+(?:the|a|an|your|any)\s+[\w-]+\s+(?:tool|plugin|extension"
        r"|function|connector)s?\b|\b(?:search|browse|google|look\s+\w+\s+up|look\s+up)\s+(?:\w+\s+){0,2}(?:web|internet"
        r"|online)\b|\bweb[\s-]+(?:search|browser|browsing)\b"
    ),
    # Shells, commands and files on the agent's machine.
    re.compile(
        r"\b(?:a|the|your|any)\s+(?:shell|terminal|console)\s+(?:commands?|session|prompt|window)\b"
        r"|\b(?:in|into|on|from)\s+(?:a|the|your)\s+(?:shell|terminal|console|command[\s-]line)\b"
        r"|\b(?:run|execute|type|enter|paste)\s+(?:the\s+)?(?:following|this|these|that)\s+(?:\w+\s+)?commands?\b"
        r"|\bexecute\s+(?:\w+\s+){0,2}(?:commands?|scripts?|code|programs?)\b|\b(?:bash|zsh|powershell|cmd\.exe|sudo"
        r"|chmod|chown|netcat|rsync|scp|subprocess|os\.system|shell_exec|popen)\b|\brm\s+-\w|\bmkfs\b|\bdd\s+if="
        r"|\|\s*(?:ba|z)?sh\b|\b(?:pip3?|pipx|npm|npx|pnpm|yarn|apt(?:-get)?|brew|conda|gem|cargo|go)\s+(?:install|add|get"
        r"|run|exec)\b|\b(?:curl|wget)\s+(?:-|\S+\.\S+|\S+/)|\b(?:eval|exec)\s*\(|`\s*(?:rm|cat|ls|cd|curl|wget"
        r"|python\d?|pip|npm|git|echo|export|env|sudo|chmod|sh|bash|nc|powershell)\b"
        r"|(?<![\w)])/(?:etc|proc|home|root|var|usr|tmp|dev|sys|users|private|bin)/|\bc:\\"
        r"|\b(?:read|open|cat|upload|download|send|delete|modify|write\s+to|overwrite)\s+(?:the\s+|a\s+|any\s+|all\s+)?"
        r"(?:files?|folders?|directories|disk|contents\s+of)\b"
    ),
]
_TOOL_SQUASHED = ("runthiscommand", "executethiscommand", "inyourterminal", "inyourshell")

_BLOB_RULES = [
    re.compile(r"(?:\\x[0-9a-f]{2}){3,}|(?:\\u[0-9a-f]{4}){2,}|(?:%[0-9a-f]{2}){3,}|(?:&#x?[0-9a-f]{1,6};){3,}"),
    re.compile(r"\b(?:base64|base32|rot13|rot-13|uuencode|hexdump)\b|\bdecode\s+(?:this|the\s+following|it|them)\b"),
    re.compile(r"\b(?:0x)?(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{32,}\b"),
]
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_MARKUP_RULES = [
    re.compile(
        r"<\s*/?\s*(?:script|iframe|img|a|style|object|embed|svg|meta|link|form|input|body|html|head|div|span|p|br"
        r"|details|summary)\b[^>]*>|!?\[[^\]]{0,200}\]\([^)]{0,500}\)|```|<!--|-->"
    ),
]


def _blob(text: str) -> bool:
    for run in _BASE64_RUN.findall(text):
        body = run.rstrip("=")
        cased = any(c.islower() for c in body) and any(c.isupper() for c in body)
        if cased and (any(c.isdigit() for c in body) or re.search(r"[+/]", body) or run.endswith("=")):
            return True
    return any(rule.search(_fold(text)) for rule in _BLOB_RULES)


# Receivers of attribute access in code (`self.name`, `df.info`), not the first label of a host.
_CODE_RECEIVERS = {"self", "this", "cls", "obj", "args", "kwargs", "df", "np", "pd", "os", "sys", "math", "str", "re"}


def _host(folded: str) -> str | None:
    """A domain name in the text, however it is spelled out; None if there is none."""
    for match in _HOST.finditer(folded):
        labels, tld, after = match.group(1), match.group(2), match.group(3)
        names = labels.split(".")[:-1]
        code = names[0] in _CODE_RECEIVERS or folded[match.end() : match.end() + 1] in ("(", "[", "=")
        if not tld.isalpha() or (code and not after):
            continue
        several = len(names) >= 2 and all(len(name) > 1 for name in names)
        country = len(tld) == 2 and len(names[-1]) > 1 and tld not in _FILE_ENDINGS | _WORD_ENDINGS
        if after or several or tld in _TLDS or country:
            return match.group(0)
    return None


def _mixed_alphabets(text: str) -> bool:
    for word in re.findall(r"\w+", text):
        scripts = {unicodedata.name(c, "").split(" ")[0] for c in word if c.isalpha()}
        if "LATIN" in scripts and "CYRILLIC" in scripts:
            return True
    return False


def _overrides(folded: str) -> bool:
    for rule in _OVERRIDE_RULES:
        for match in rule.finditer(folded):
            # "do not ignore the earlier rule" is advice about a puzzle, not an override.
            if not _NEGATED.search(folded[max(0, match.start() - 12) : match.start()]):
                return True
    return False


def content_problem(text: str) -> str | None:
    """Why a normalised lesson addresses the agent or its tools instead of the task, or None."""
    folded = _fold(text)
    squashed = _squash(folded)
    # Phrases are looked for backwards too: text between bidi overrides is stored reversed.
    both = f"{squashed} {squashed[::-1]}"
    checks: list[tuple[str, bool]] = [
        (_MIXED, _mixed_alphabets(text)),
        (_ROLE, any(r.search(folded) for r in _ROLE_RULES) or any(s in both for s in _ROLE_SQUASHED)),
        (
            _OVERRIDE,
            _overrides(folded) or bool(_FOREIGN_OVERRIDE.search(folded)) or any(s in both for s in _OVERRIDE_SQUASHED),
        ),
        (
            _SECRETS,
            any(r.search(text) for r in _SECRET_RULES)
            or any(r.search(folded) for r in _SECRET_FOLDED)
            or any(s in both for s in _SECRET_SQUASHED),
        ),
        (_PROMPT, any(r.search(folded) for r in _PROMPT_RULES) or any(s in both for s in _PROMPT_SQUASHED)),
        (_URL, any(r.search(folded) for r in _URL_RULES) or _host(folded) is not None or "http" in squashed),
        (
            _TOOLS,
            bool(_TOOL_IDENTIFIERS.search(folded))
            or any(r.search(folded) for r in _TOOL_RULES)
            or any(s in both for s in _TOOL_SQUASHED)
            or any(name.replace("_", "") in squashed for name in TOOL_NAMES if name.count("_") and len(name) > 10),
        ),
        (_BLOB, _blob(text)),
        (_MARKUP, any(r.search(folded) for r in _MARKUP_RULES)),
    ]
    return next((why for why, hit in checks if hit), None)


# ---- copies --------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", _fold(normalise(text)))


def _spans(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies(text: str, sources: Iterable[str], known: Iterable[str] = ()) -> bool:
    """Whether the lesson repeats a long span of a source, or a whole short one, word for word.

    Spans the lesson shares with `known` texts (the library's current lessons, which attempts
    quote when they cite them) are not copies of the attempt.
    """
    words = _words(text)
    spans = _spans(words, COPIED_SPAN_WORDS)
    for lesson in known:
        spans -= _spans(_words(lesson), COPIED_SPAN_WORDS)
    joined = f" {' '.join(words)} "
    for source in sources:
        source_words = _words(source)
        if SHORT_SOURCE_WORDS <= len(source_words) < COPIED_SPAN_WORDS:
            if f" {' '.join(source_words)} " in joined:
                return True
        elif spans and spans & _spans(source_words, COPIED_SPAN_WORDS):
            return True
    return False


def check(text: str, sources: Iterable[str] = (), known: Iterable[str] = ()) -> Refusal | None:
    """Why a normalised lesson must not be stored, or None if the rules let it pass.

    `sources` are the texts it was distilled from (tasks, trajectories, answers, ground truths);
    `known`, texts it may quote freely (the library's lessons).
    """
    if not text.strip():
        return Refusal("is empty", content=False)
    if len(text) > MAX_LESSON_CHARS:
        return Refusal(f"is {len(text)} characters long; lessons are capped at {MAX_LESSON_CHARS}", content=False)
    if why := content_problem(text):
        return Refusal(why)
    if copies(text, sources, known):
        return Refusal(
            f"copies {COPIED_SPAN_WORDS}+ consecutive words (or a whole answer or ground truth) from the task or its "
            "attempts verbatim"
        )
    return None


def explain(refusal: Refusal) -> str:
    """A refused lesson's reason said as what to do, for the caller that has to fix it."""
    if not refusal.content:
        return f"This lesson {refusal.reason}. Write a general lesson in one or two sentences."
    return (
        f"This lesson {refusal.reason}. Lessons are prepended to agents' system prompts, so they may only talk about "
        "the task: rephrase it as a reasoning pattern or a pitfall of the task's domain."
    )
