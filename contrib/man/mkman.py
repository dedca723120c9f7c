#!/usr/bin/env python3
"""mkman.py - feedguard's manual pages, written from README.md.

The README is the one source: its reference tables are checked against
the config and policy parsers' own key lists by `make check`
(tests/unit/test_reference.c), and the pages are made from its sections,
so a page cannot say something the README does not.  The build runs

    mkman.py --readme README.md --page feedguardd.8 --output feedguardd.8 \
             [--version V] [--sysconfdir DIR] [--pkgdatadir DIR]

for each page (feedguardd.8, feedguardctl.8, feedguard-replay.1,
feedguard.yaml.5, feedguard-policy.5).

Which sections go where is said in the README, by HTML comments that do
not show when it is rendered:

    <!-- man feedguardd(8) SIGNALS: begin -->  ... <!-- man feedguardd(8): end -->

puts the lines between them into feedguardd(8), under the man section
SIGNALS.  Without a title, a region starts with a heading, and headings
of the page's base level (### for most pages, ## for feedguard-policy(5))
become sections, deeper ones subsections (a region that starts with a
deeper heading goes on with the section before).  Regions of one page
may nest: a line goes to the innermost one (so a SYNOPSIS region inside
a DESCRIPTION region is not repeated).  A SYNOPSIS region is a usage block:
its unindented lines are the synopsis, its indented "-x, --long ARG  text"
lines the OPTIONS.  NAME, FILES, EXIT STATUS (where the README has none)
and SEE ALSO are the page's own, below.

Only the Markdown the README uses is read: headings, paragraphs, bullet
and numbered lists (nested, with code blocks inside), fenced code blocks,
pipe tables, `code`, **bold**, *italic* and [links](...) (their text).
A table becomes a list of tagged paragraphs (.TP), its first column the
tag (rows whose first cell is empty, as in the harm classes, are grouped
under the row before), since its cells are sentences that a tbl(1) table
would squeeze into narrow columns.  Python's standard library only: the subset is small, and
pandoc or ronn would be a build dependency for it.
"""

import argparse
import datetime
import os
import re
import sys

SEE_ALSO = [("feedguardd", "8"), ("feedguardctl", "8"), ("feedguard-replay", "1"),
            ("feedguard.yaml", "5"), ("feedguard-policy", "5")]

# What each page says that the README does not: its NAME line, the files
# it names (with {sysconfdir} and {pkgdatadir} as configured), and the
# daemon's exit status (main.c), which the README gives only in passing.
CONFIG_FILES = [
    ("{sysconfdir}/feedguard/feedguard.yaml",
     "The configuration read when no \\fB\\-c\\fR is given."),
    ("{sysconfdir}/feedguard/feedguard.example.yaml",
     "An example configuration: a sidecar in front of a ranker on 127.0.0.1:50051, "
     "with the UK children's policy, to copy to feedguard.yaml."),
    ("{sysconfdir}/feedguard/keys/k1.key",
     "The pseudonym key the example configuration names (\\fBpseudonym_keys\\fR: 16 to 1024 "
     "secret bytes; relative paths in a configuration are relative to its directory)."),
]
POLICY_FILES = [
    ("{pkgdatadir}/policies/",
     "The reference policies: uk-children.yaml (the policy a UK platform starts from), "
     "demo.yaml, and ranking.pb, the descriptor set of the reference ranking contract they name."),
    ("{pkgdatadir}/proto/",
     "The reference ranking contract (feedguard/ranking/v1/ranking.proto) and the capture "
     "format (feedguard/capture/v1/capture.proto)."),
]

PAGES = {
    "feedguardd.8": {
        "name": "feedguardd", "section": "8", "base": 3, "manual": "System Administration",
        "summary": "gRPC sidecar applying children's safety policy to a feed ranker",
        "files": CONFIG_FILES + POLICY_FILES,
        "exit": [("0", "The configuration is valid (\\fB\\-t\\fR), or the daemon stopped "
                       "after draining (SIGTERM, SIGINT)."),
                 ("1", "The configuration is invalid or cannot be read, the daemon could not "
                       "start, or a second SIGTERM or SIGINT stopped it at once."),
                 ("2", "Usage: an unknown option or an extra argument.")],
    },
    "feedguardctl.8": {
        "name": "feedguardctl", "section": "8", "base": 3, "manual": "System Administration",
        "summary": "show or erase a user's feedguard screen-time state and captures",
        "files": CONFIG_FILES[:1],
    },
    "feedguard-replay.1": {
        "name": "feedguard-replay", "section": "1", "base": 3, "manual": "User Commands",
        "summary": "read, replay and compare feedguard traffic captures",
        "files": POLICY_FILES[:1],
    },
    "feedguard.yaml.5": {
        "name": "feedguard.yaml", "section": "5", "base": 3, "manual": "File Formats",
        "summary": "configuration file of feedguardd",
        "files": CONFIG_FILES,
    },
    "feedguard-policy.5": {
        "name": "feedguard-policy", "section": "5", "base": 2, "manual": "File Formats",
        "summary": "policy file of feedguardd: profiling, content, screen time",
        "files": POLICY_FILES,
    },
}

# Sections in the order man-pages(7) gives; others keep the README's order
# between OPTIONS and FILES.
FIRST = ["SYNOPSIS", "DESCRIPTION", "OPTIONS"]
LAST = ["FILES", "EXIT STATUS", "SEE ALSO"]

MARKER = re.compile(r"^<!--\s*man\s+(\S+)\((\d)\)(?:\s+([A-Z][A-Z ]*?))?\s*:\s*(begin|end)\s*-->\s*$")
COMMENT = re.compile(r"^<!--.*-->\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
ITEM = re.compile(r"^(\s*)([-*]|\d+\.)\s+(.*)$")
# Columns whose cell says what a row is; the others are labelled ("Default: 2s").
DESCRIPTIVE = {"meaning", "means", "what", "value", "content"}
# A table row's text, under its tag; set on each row, since a list before
# the table leaves its own indentation for .TP to take.
TABLE_INDENT = 4


class Error(Exception):
    pass


# --- roff text -------------------------------------------------------------

def char(c, code):
    """One character as roff input: specials escaped, non-ASCII named."""
    if c == "\\":
        return "\\e"
    if c == "-":
        return "\\-" if code else "-"
    if c == "'" and code:
        return "\\(aq"
    if c == "`":
        return "\\(ga"
    if c == '"' and code:
        return "\\(dq"
    if c == "\t":
        return "    "
    if ord(c) > 126:
        return "\\[u%04X]" % ord(c)
    return c


def text(s, code=False):
    return "".join(char(c, code) for c in s)


def inline(s, font="R"):
    """Markdown inline text as roff, in font <font> ('R', 'B' or 'I')."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "\\`*_[]|<>#":
            out.append(char(s[i + 1], False))
            i += 2
        elif c == "`":
            j = s.find("`", i + 1)
            if j < 0:
                raise Error("unclosed code span in: %s" % s)
            out.append("\\fB" + text(s[i + 1:j], True) + "\\f" + font)
            i = j + 1
        elif s.startswith("**", i):
            j = s.find("**", i + 2)
            if j < 0:
                raise Error("unclosed ** in: %s" % s)
            out.append("\\fB" + inline(s[i + 2:j], "B") + "\\f" + font)
            i = j + 2
        elif c == "*" and i + 1 < len(s) and not s[i + 1].isspace() and s.find("*", i + 1) > 0:
            j = s.find("*", i + 1)
            out.append("\\fI" + inline(s[i + 1:j], "I") + "\\f" + font)
            i = j + 1
        elif c == "[":
            m = re.match(r"\[((?:`[^`]*`|[^\]])*)\]\(([^)]*)\)", s[i:])
            if m:
                out.append(inline(m.group(1), font))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(char(c, False))
            i += 1
    return "".join(out)


def fill(s, width=78):
    """Roff input lines for filled text <s> (already roff): a new sentence
    starts a new line (groff then spaces sentences as it should), long
    lines break at spaces, and no line starts with a control character."""
    words = re.split(r" +", s.strip())
    lines, cur = [], ""
    for w in words:
        if cur and (len(cur) + 1 + len(w) > width or re.search(r"[.?!]\)?$", cur) and re.match(r"(\\f[BI])?[A-Z]", w)):
            lines.append(cur)
            cur = w
        else:
            cur = cur + " " + w if cur else w
    if cur:
        lines.append(cur)
    return [("\\&" + l) if l[:1] in (".", "'") else l for l in lines]


def macro_arg(s):
    """Plain text as one quoted macro argument."""
    return '"' + text(s, False).replace('"', '\\(dq') + '"'


# --- Markdown blocks ---------------------------------------------------------

def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def starts_block(line):
    return bool(HEADING.match(line) or FENCE.match(line) or ITEM.match(line) or line.lstrip().startswith("|"))


def parse(lines):
    """Lines of Markdown into blocks: ('h', level, text), ('p', text),
    ('code', lines), ('table', rows), ('list', ordered, [blocks of each item])."""
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or COMMENT.match(line.strip()):
            i += 1
        elif HEADING.match(line):
            m = HEADING.match(line)
            blocks.append(("h", len(m.group(1)), m.group(2)))
            i += 1
        elif FENCE.match(line):
            i = parse_code(lines, i, blocks)
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            blocks.append(("table", rows))
        elif ITEM.match(line):
            i = parse_list(lines, i, blocks)
        else:
            para = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not starts_block(lines[i]) \
                    and not COMMENT.match(lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            blocks.append(("p", " ".join(para)))
    return blocks


def parse_code(lines, i, blocks):
    m = FENCE.match(lines[i])
    pad = len(m.group(1))
    body, i = [], i + 1
    while i < len(lines) and not (FENCE.match(lines[i]) and not FENCE.match(lines[i]).group(2)):
        body.append(lines[i][pad:] if lines[i][:pad].strip() == "" else lines[i].lstrip())
        i += 1
    if i == len(lines):
        raise Error("unclosed code block")
    blocks.append(("code", body))
    return i + 1


def parse_list(lines, i, blocks):
    """A list whose first item is at line <i>: its items' content, each
    parsed again with the item's indentation taken off."""
    first = ITEM.match(lines[i])
    base, ordered = len(first.group(1)), first.group(2)[0].isdigit()
    items = []
    while i < len(lines):
        m = ITEM.match(lines[i])
        if not m or len(m.group(1)) != base or m.group(2)[0].isdigit() != ordered:
            break
        col = base + len(m.group(2)) + 1
        body, i = [m.group(3)], i + 1
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                nxt = next((l for l in lines[i + 1:] if l.strip()), "")
                if indent_of(nxt) < col:
                    break
                body.append("")
            elif indent_of(line) >= col:
                body.append(line[col:])
            elif ITEM.match(line) or starts_block(line) or COMMENT.match(line.strip()):
                break
            else:                                   # a lazy continuation line
                body.append(line.strip())
            i += 1
        items.append(parse(body))
        while i < len(lines) and not lines[i].strip():
            nxt = next((l for l in lines[i:] if l.strip()), "")
            m = ITEM.match(nxt)
            if not m or len(m.group(1)) != base:
                break
            i += 1
    blocks.append(("list", ordered, items))
    return i


def cells(line):
    """The cells of a table row; `\\|` is a bar inside a cell (in code too,
    as GitHub reads it)."""
    s = line.strip()
    parts, cur, i = [], "", 1 if s.startswith("|") else 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 2] == "|":
            cur += "|"
            i += 2
        elif s[i] == "|":
            parts.append(cur.strip())
            cur = ""
            i += 1
        else:
            cur += s[i]
            i += 1
    if cur.strip():
        parts.append(cur.strip())
    return parts


# --- roff blocks -------------------------------------------------------------

def render(blocks, base, out, para=".PP", in_item=False):
    """Blocks into roff lines appended to <out>, each paragraph opened by
    <para> (".PP"; in a list item, an untagged .IP at the item's indent).
    Headings deeper than the page's base level become .SS; base-level
    ones start sections and are the caller's."""
    for b in blocks:
        kind = b[0]
        if kind == "h":
            if b[1] <= base:
                raise Error("a heading of the section's level inside a section: %s" % b[2])
            out.append(".SS " + macro_arg(strip_md(b[2])))
        elif kind == "p":
            out.append(para)
            out.extend(fill(inline(b[1])))
        elif kind == "code":
            code_block(b[1], out, para)
        elif kind == "table":
            table(b[1], out)
        elif kind == "list":
            list_block(b[1], b[2], out, base, in_item)


def code_block(body, out, para):
    out.append(para)
    out.append(".RS 4" if para == ".PP" else ".RS")
    out.append(".nf")
    for line in body:
        line = text(line, True)
        out.append("\\&" + line if not line or line[0] in ".'" else line)
    out.append(".fi")
    out.append(".RE")


def list_block(ordered, items, out, base, nested):
    """Items as tagged paragraphs; a list inside an item is moved in to
    the item's text (.RS) so its tags line up under it."""
    width = 4 if ordered else 2
    if nested:
        out.append(".RS")
    for n, item in enumerate(items, 1):
        out.append(".IP %s %d" % ("%d." % n if ordered else "\\(bu", width))
        sub = []
        render(item, base, sub, '.IP "" %d' % width, True)
        if sub and sub[0] == '.IP "" %d' % width:
            sub = sub[1:]                   # its first paragraph follows the tag
        out.extend(sub)
    if nested:
        out.append(".RE")
        out.append('.IP "" %d' % width)


def strip_md(s):
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s).replace("`", "").replace("**", "")


def table(rows, out):
    """A pipe table as tagged paragraphs: the first column is the tag, a
    descriptive column the text, the others labelled after it; rows with
    an empty first cell are a group under the last row that had one."""
    if len(rows) < 3 or not re.match(r"^[-:| ]+$", "|".join(rows[1])):
        raise Error("a table needs a header and a |---| line: %s" % rows[:2])
    head, body = rows[0], rows[2:]
    grouped = any(not r[0] for r in body)
    if " " in head[0]:                  # a header that says which keys these are
        out.append(".PP")
        out.extend(fill(inline(head[0][0].upper() + head[0][1:]) + ":"))
    desc = [i for i in range(1, len(head)) if head[i].lower() in DESCRIPTIVE]
    for r in body:
        r = r + [""] * (len(head) - len(r))
        start = 0
        if grouped:
            if r[0]:
                out.append(".PP")
                out.extend(fill(inline(r[0]) + ":"))
            start = 1
        out.append(".TP %d" % TABLE_INDENT)
        tag = inline(r[start])
        out.append("\\&" + tag if tag[:1] in ".'" else tag)
        first = True
        order = [i for i in desc if i > start] + [i for i in range(start + 1, len(head)) if i not in desc]
        for i in order:
            if not r[i]:
                continue
            s = inline(r[i]) if (i in desc or len(head) - start == 2) \
                else inline(head[i][0].upper() + head[i][1:]) + ": " + inline(r[i])
            if not first:
                out.append(".br")
            out.extend(fill(s))
            first = False


# --- the page ------------------------------------------------------------------

def regions(readme, page, section):
    """The README's regions for <page>(<section>): (title or None, lines)."""
    found, stack = [], []
    for n, line in enumerate(readme.split("\n"), 1):
        m = MARKER.match(line.strip())
        if m and m.group(1) == page and m.group(2) == section:
            if m.group(4) == "begin":
                stack.append((m.group(3), [], n))
                found.append(stack[-1])
            elif not stack:
                raise Error("README.md:%d: an end without a begin for %s(%s)" % (n, page, section))
            else:
                stack.pop()
        elif stack and not m:
            stack[-1][1].append(line)
    if stack:
        raise Error("README.md:%d: %s(%s) region never ends" % (stack[-1][2], page, section))
    if not found:
        raise Error("README.md has no region for %s(%s)" % (page, section))
    return [(t, lines) for t, lines, _ in found]


def synopsis(lines, sections):
    """A usage block: unindented lines are the synopsis, indented
    "-x, --long ARG  text" lines the options."""
    blocks = [b for b in parse(lines) if b[0] != "p"]
    if len(blocks) != 1 or blocks[0][0] != "code":
        raise Error("a SYNOPSIS region is one code block")
    syn, opts = sections.setdefault("SYNOPSIS", []), sections.setdefault("OPTIONS", [])
    syn.append(".nf")
    for line in blocks[0][1]:
        m = re.match(r"^\s+(-\S.*?)\s{2,}(\S.*)$", line)
        if m:
            opts.append(".TP")
            opts.append(usage_words(m.group(1)))
            opts.extend(fill(inline(m.group(2))))
        else:
            syn.append(usage_words(line))
    syn.append(".fi")


def usage_words(line):
    """A usage line: the program and options bold, placeholders italic."""
    out = []
    for tok in re.split(r"(\s+|[\[\]|()])", line):
        if re.match(r"^feedguard[\w-]*$", tok) and not out:
            out.append("\\fB" + text(tok, True) + "\\fR")
        elif re.match(r"^--?[a-z][\w-]*,?$", tok):
            out.append("\\fB" + text(tok.rstrip(","), True) + "\\fR" + ("," if tok.endswith(",") else ""))
        elif re.match(r"^[A-Z][A-Z0-9_]*(?:[:/][A-Z][A-Z0-9_]*)*(?:\.csv)?(?:\.\.\.)?$", tok):
            out.append("\\fI" + text(tok, True) + "\\fR")
        else:
            out.append(text(tok, True))
    s = "".join(out)
    return "\\&" + s if s[:1] in ".' " or not s else s


def page_sections(readme, page, section, base):
    """The page's sections, title -> roff lines, in the README's order."""
    sections, last = {}, None
    for title, lines in regions(readme, page, section):
        if title == "SYNOPSIS":
            synopsis(lines, sections)
            continue
        blocks = parse(lines)
        cur = None                          # the blocks of the section being filled
        if title is None and blocks and blocks[0][0] == "h" and blocks[0][1] > base:
            title = last                    # it goes on with the section before
        for b in blocks:
            if b[0] == "h" and b[1] == base:
                title = strip_md(b[2]).upper()
                cur = None
            elif title is None:
                raise Error("a %s(%s) region without a title must start with a heading" % (page, section))
            else:
                if cur is None:
                    cur = []
                    sections.setdefault(title, []).append(cur)
                cur.append(b)
        last = title
    out = {}
    for title, parts in sections.items():
        if title in ("SYNOPSIS", "OPTIONS"):
            out[title] = parts
            continue
        lines = []
        for part in parts:
            render(part, base, lines)
        out[title] = lines
    return out


def path_roff(path):
    """A configured path as roff: a long prefix (make distcheck's is its
    build directory) may break the line after a slash (\\:) instead of
    overrunning it, which groff -ww reports."""
    return text(path, True).replace("/", "/\\:")


def page_text(readme, file, args):
    p = PAGES[file]
    sections = page_sections(readme, p["name"], p["section"], p["base"])
    subst = {"sysconfdir": args.sysconfdir, "pkgdatadir": args.pkgdatadir}
    if "files" in p:
        files = []
        for path, what in p["files"]:
            path = path_roff(path.format(**subst))
            files += [".TP", "\\fB" + path + "\\fR"] + fill(what)
        sections["FILES"] = files
    if "exit" in p:
        ex = []
        for code, what in p["exit"]:
            ex += [".TP", code] + fill(what)
        sections["EXIT STATUS"] = ex
    also = [(n, s) for n, s in SEE_ALSO if n != p["name"]]
    sections["SEE ALSO"] = [",\n".join(".BR %s (%s)" % (text(n, True), s) for n, s in also)] + \
        [".PP"] + fill("README.md in the feedguard sources, which these pages are made from.")
    order = [t for t in FIRST if t in sections] + \
            [t for t in sections if t not in FIRST and t not in LAST] + \
            [t for t in LAST if t in sections]
    out = ['.\\" Made by contrib/man/mkman.py from README.md: edit those, not this.',
           ".TH %s %s %s %s %s" % (macro_arg(p["name"].upper()), p["section"], macro_arg(args.date),
                                  macro_arg("feedguard " + args.version), macro_arg(p["manual"])),
           # identifiers are not hyphenated, and long ones would stretch
           # justified lines: left-adjusted, no hyphenation
           ".nh",
           ".ad l",
           ".SH NAME",
           "%s \\- %s" % (text(p["name"], True), text(p["summary"]))]
    for t in order:
        if not sections[t]:
            continue                        # options only the prose describes
        out.append(".SH " + macro_arg(t))
        out.extend(sections[t])
    # The README gives the package's default -c; this build's is its own.
    default = "(default /etc/feedguard/feedguard.yaml)"
    mine = "(default %s)" % path_roff(args.sysconfdir + "/feedguard/feedguard.yaml")
    return "\n".join(line.replace(default, mine) for line in fix_paragraphs(out)) + "\n"


def fix_paragraphs(lines):
    """No paragraph macro right after a section heading (it would only
    add a warning in mandoc -Tlint and nothing on the page)."""
    out = []
    for line in lines:
        if line == ".PP" and out and (out[-1].startswith(".SH") or out[-1].startswith(".SS")):
            continue
        out.append(line)
    return out


def build_date(readme_path):
    """SOURCE_DATE_EPOCH (reproducible builds), else README.md's mtime."""
    t = os.environ.get("SOURCE_DATE_EPOCH")
    t = int(t) if t and t.isdigit() else int(os.stat(readme_path).st_mtime)
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


def main():
    ap = argparse.ArgumentParser(description="feedguard's manual pages from README.md")
    ap.add_argument("--readme", required=True)
    ap.add_argument("--page", required=True, choices=sorted(PAGES))
    ap.add_argument("--output", help="default: stdout")
    ap.add_argument("--version", default="")
    ap.add_argument("--sysconfdir", default="/etc")
    ap.add_argument("--pkgdatadir", default="/usr/share/feedguard")
    args = ap.parse_args()
    with open(args.readme, encoding="utf-8") as f:
        readme = f.read()
    args.date = build_date(args.readme)
    try:
        page = page_text(readme, args.page, args)
    except Error as e:
        sys.exit("mkman.py: %s: %s" % (args.page, e))
    if not args.output:
        sys.stdout.write(page)
        return
    tmp = args.output + ".tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(page)
        os.replace(tmp, args.output)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


if __name__ == "__main__":
    main()
