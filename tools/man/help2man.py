#!/usr/bin/env python3
"""Makes a man page (roff) from a program's --help, at build time, so the
page says what the binary says.

    help2man.py OUTPUT PROGRAM SECTION "ONE-LINE SUMMARY" [--commands]
                [--files FILE:WHAT]... [--see-also NAME(S)]...

--commands: PROGRAM --help lists commands ("Commands:" then "  name  what");
each command's own --help becomes a subsection, and so do the subcommands
its usage line names ("shahidi device enroll|list|revoke") and any given
with --sub "conflicts resolve".

The help text becomes roff: lines at the left margin are running text
(filled), a blank line starts a paragraph, lines indented by two spaces
are an option list (".TP": the tag up to the first run of two spaces, the
rest and the deeper-indented lines after it the description), and any
other indented block stays as it is (".nf").
"""
import datetime
import os
import re
import subprocess
import sys


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    if s.startswith((".", "'")):
        s = "\\&" + s
    return s


def run_help(prog, args):
    env = dict(os.environ, LC_ALL="C", COLUMNS="80")
    p = subprocess.run([prog, *args, "--help"], capture_output=True, text=True, env=env,
                       timeout=30)
    if p.returncode != 0 or not p.stdout.strip():
        sys.exit(f"help2man: {prog} {' '.join(args)} --help failed: {p.stderr}")
    return p.stdout


def split_usage(text):
    """(usage lines, the rest): the usage is the first block."""
    lines = text.rstrip("\n").split("\n")
    usage = []
    while lines and lines[0].strip():
        usage.append(lines.pop(0))
    if usage:
        usage[0] = re.sub(r"^Usage:\s*", "", usage[0])
    return usage, lines


def body(lines):
    """The help text after the usage, as roff."""
    out = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip():
            out.append(".PP")
            i += 1
            continue
        if not ln.startswith(" "):
            out.append(esc(ln))
            i += 1
            continue
        if re.match(r"^  \S", ln):
            # an option list entry: tag, then its description
            m = re.match(r"^  (\S(?:.*?\S)?)(?: {2,}(.*))?$", ln)
            tag, desc = m.group(1), [m.group(2)] if m.group(2) else []
            i += 1
            while i < len(lines) and re.match(r"^ {3,}\S", lines[i]):
                desc.append(lines[i].strip())
                i += 1
            out.append(".TP")
            out.append("\\fB" + esc(tag) + "\\fR")
            out.extend(esc(d) for d in desc)
            continue
        # another indented block: kept as it is
        out.append(".nf")
        while i < len(lines) and lines[i].startswith(" "):
            out.append(esc(lines[i]))
            i += 1
        out.append(".fi")
    # a paragraph break right after a section start or before the end is noise
    while out and out[0] == ".PP":
        out.pop(0)
    while out and out[-1] == ".PP":
        out.pop()
    return out


def synopsis(usage):
    out = [".nf"]
    for u in usage:
        out.append(esc(re.sub(r"^\s+", "    ", u) if u.startswith(" ") else u))
    out.append(".fi")
    return out


def main():
    a = sys.argv[1:]
    if len(a) < 4:
        sys.exit(__doc__)
    output, prog, section, summary = a[:4]
    commands = False
    files, see_also, subs = [], [], []
    rest = a[4:]
    while rest:
        opt = rest.pop(0)
        if opt == "--commands":
            commands = True
        elif opt == "--files":
            files.append(rest.pop(0))
        elif opt == "--see-also":
            see_also.append(rest.pop(0))
        elif opt == "--sub":
            subs.append(rest.pop(0))
        else:
            sys.exit(f"help2man: unknown option {opt}")
    name = os.path.basename(prog)
    version = subprocess.run([prog, "--version"], capture_output=True, text=True).stdout.split()
    version = version[-1] if version else ""
    # the build's date would make two builds differ: SOURCE_DATE_EPOCH if set
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc) if epoch else None
    date = date.strftime("%Y-%m-%d") if date else ""
    title = esc(name.upper())
    out = [f'.TH {title} {section} "{date}" "{name} {version}" "Shahidi"',
           ".nh", ".ad l",  # no hyphenated --flags, no stretched lines
           ".SH NAME", f"{esc(name)} \\- {esc(summary)}"]
    usage, rest_lines = split_usage(run_help(prog, []))
    out += [".SH SYNOPSIS"] + synopsis(usage)
    out += [".SH DESCRIPTION"] + body(rest_lines)
    if commands:
        text = run_help(prog, [])
        cmds = re.findall(r"^  ([a-z][a-z-]*) +\S", text.split("Commands:", 1)[1], re.M)
        out.append(".SH COMMANDS")
        for c in cmds:
            paths = [[c]]
            u, _ = split_usage(run_help(prog, [c]))
            m = re.match(rf"{re.escape(name)} {c} ([a-z]+(?:\|[a-z]+)+)", u[0]) if u else None
            if m:
                paths += [[c, s] for s in m.group(1).split("|")]
            paths += [s.split() for s in subs if s.split()[0] == c]
            for p in paths:
                u, lines = split_usage(run_help(prog, p))
                out.append(".SS " + esc(" ".join(p)))
                out += synopsis(u) + [".PP"] + body(lines)
    if files:
        out.append(".SH FILES")
        for f in files:
            path, what = f.split(":", 1)
            out += [".TP", "\\fI" + esc(path) + "\\fR", esc(what)]
    if see_also:
        out += [".SH SEE ALSO",
                ", ".join("\\fB" + esc(s.split("(")[0]) + "\\fR(" + s.split("(")[1]
                          for s in see_also)]
    # no two paragraph macros in a row
    clean = []
    for ln in out:
        if ln == ".PP" and clean and clean[-1] in (".PP", ".TP") or \
                ln == ".PP" and clean and clean[-1].startswith((".SH", ".SS")):
            continue
        clean.append(ln)
    with open(output, "w") as f:
        f.write("\n".join(clean) + "\n")


main()
