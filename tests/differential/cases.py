"""Hand-written differential cases: each instruction and flag, the parser's and the expander's
corners, and the failures BuildKit reports. ``@BASE@`` is busybox, ``@RICH@`` a base that sets
every inheritable field, ``@NOPATH@`` busybox with a config without ``PATH``."""

from __future__ import annotations

from textwrap import dedent

from tests.differential.archives import CASES as _archive_cases
from tests.differential.contexts import CASES as _context_cases
from tests.differential.harness import Case
from tests.differential.platforms import CASES as _platform_cases
from tests.differential.remote import CASES as _remote_cases
from tests.differential.sandbox import CASES as _sandbox_cases
from tests.differential.secrets import CASES as _secret_cases
from tests.differential.ssh_mounts import CASES as _ssh_cases

CASES: list[Case] = []


def case(name: str, category: str, dockerfile: str, **kw: object) -> None:
    text = dedent(dockerfile).lstrip("\n")
    CASES.append(Case(name=f"hand-{name}", category=category, dockerfile=text, **kw))  # type: ignore[arg-type]


# --- image config --------------------------------------------------------------------------
case("scratch-env", "config", "FROM scratch\nENV A=1\n")
case("scratch-label", "config", "FROM scratch\nLABEL a=b\n")
case("base-label", "config", "FROM @BASE@\nLABEL a=b\n")
case("base-only", "config", "FROM @BASE@\n")
case("scratch-only", "config", "FROM scratch\n")
case("nopath-env", "config", "FROM @NOPATH@\nENV A=1\n")
case("nopath-run", "config", 'FROM @NOPATH@\nRUN echo "$PATH" > /p\n')
case("nopath-cmd", "config", "FROM @NOPATH@\nCMD echo hi\n")
case("nopath-only", "config", "FROM @NOPATH@\n")
case("rich-inherit", "config", "FROM @RICH@\nRUN pwd > /tmp/pwd && id > /tmp/id\n")
case("rich-override", "config", 'FROM @RICH@\nUSER root\nWORKDIR /\nENTRYPOINT ["/bin/true"]\n')
case("rich-cmd-kept", "config", "FROM @RICH@\nLABEL overridden=child\n")
case("entrypoint-resets-cmd", "config", 'FROM @BASE@\nCMD ["a"]\nENTRYPOINT ["b"]\n')
case("cmd-after-entrypoint", "config", 'FROM @BASE@\nENTRYPOINT ["b"]\nCMD ["a"]\n')
case("cmd-shell-with-shell", "config", 'FROM @BASE@\nSHELL ["/bin/ash", "-c"]\nCMD echo hi\n')
case("entrypoint-shell", "config", "FROM @BASE@\nENTRYPOINT exec top -b\n")
case("healthcheck-none", "config", "FROM @BASE@\nHEALTHCHECK NONE\n")
case(
    "healthcheck-flags",
    "config",
    "FROM @BASE@\nHEALTHCHECK --interval=5s --timeout=2s --start-period=1m30s --retries=3 "
    "CMD true\n",
)
case("healthcheck-json", "config", 'FROM @BASE@\nHEALTHCHECK CMD ["true", "x"]\n')
case("stopsignal-number", "config", "FROM @BASE@\nSTOPSIGNAL 9\n")
case("stopsignal-name", "config", "FROM @BASE@\nSTOPSIGNAL SIGKILL\n")
case("labels-quoted", "config", 'FROM scratch\nLABEL "a b"="c d" e=\'f g\' h=i\\ j\n')
case("label-old-form", "config", "FROM scratch\nLABEL key value with spaces\n")
case("maintainer", "config", "FROM scratch\nMAINTAINER Some One <a@b.c>\n")
case("onbuild-run", "config", "FROM @BASE@\nONBUILD RUN echo hi\nONBUILD COPY a.txt /\n")
case("user-numeric", "config", "FROM @BASE@\nUSER 1000:1000\n")
case("user-name", "config", "FROM @BASE@\nUSER builder\n")
case("workdir-relative", "config", "FROM @BASE@\nWORKDIR a\nWORKDIR b\nWORKDIR /x\nWORKDIR ../y\n")
case("workdir-scratch", "config", "FROM scratch\nWORKDIR /app\n")
case("volume-forms", "config", 'FROM scratch\nVOLUME /a /b\nVOLUME ["/c", "/d e"]\nVOLUME /a\n')
case("expose-forms", "config", "FROM scratch\nEXPOSE 80 443/udp\nEXPOSE 80/TCP 53/UDP\n")
case("expose-range", "config", "FROM scratch\nEXPOSE 8000-8002\nEXPOSE 9000-9001/udp\n")
case("expose-arg", "config", 'FROM scratch\nARG P="81 82"\nEXPOSE $P\n')
case("expose-quoted", "config", "FROM scratch\nEXPOSE \"83\" '84/udp'\n")
case("env-old-form", "config", "FROM scratch\nENV A b c  d\n")
case("env-old-form-tab", "config", "FROM scratch\nENV A\tb\tc\n")
case("label-tab", "config", "FROM scratch\nLABEL A\tb c\n")
case("env-replace", "config", "FROM scratch\nENV A=1\nENV A=2 B=$A\n")
case("shell-config", "config", 'FROM @BASE@\nSHELL ["/bin/sh", "-ec"]\n')
case("raw-cmd-empty", "config", "FROM @BASE@\nCMD []\n")
case("cmd-single-quotes", "config", "FROM @BASE@\nCMD ['echo', 'hi']\n")
case("cmd-json-trailing", "config", 'FROM @BASE@\nCMD ["echo", "hi"] x\n')
case("cmd-json-escapes", "config", 'FROM @BASE@\nCMD ["a\\"b", "c\\\\d", "\\u00e9"]\n')
case(
    "platform-args",
    "config",
    "FROM scratch\nARG TARGETPLATFORM\nARG TARGETOS\nENV P=$TARGETPLATFORM O=$TARGETOS\n",
)
case("buildplatform-args", "config", "FROM scratch\nARG BUILDARCH\nENV B=$BUILDARCH\n")
case("label-arg", "config", "FROM scratch\nARG V=3\nLABEL v=$V w=${V}x\n")
# --- history -------------------------------------------------------------------------------
case("arg-multi", "history", "FROM scratch\nARG A=1 B=2\nENV C=$A$B\n")
case("arg-history-run", "history", "FROM @BASE@\nARG A=1 B\nRUN echo $A > /a\n")
case("arg-cli-run", "history", "FROM @BASE@\nARG A=1\nRUN echo $A > /a\n", args={"A": "cli"})
case("run-json-history", "history", 'FROM @BASE@\nRUN ["sh", "-c", "echo hi > /x"]\n')
case("run-mount-history", "history", "FROM @BASE@\nRUN --mount=type=tmpfs,target=/t echo > /x\n")
case(
    "copy-history", "history", "FROM scratch\nCOPY a.txt /\nCOPY --chown=1:2 b.txt /\nADD c.md /\n"
)
case("expose-history", "history", "FROM scratch\nEXPOSE 80\nEXPOSE 81/udp 82\n")
case("volume-history", "history", "FROM scratch\nVOLUME /a\nVOLUME /b /c\n")
case("env-history", "history", 'FROM scratch\nENV A=1 B="x y"\nENV C d\n')
case("label-history", "history", "FROM scratch\nLABEL a=1 \"b\"='2 3'\n")
case("onbuild-history", "history", "FROM scratch\nONBUILD RUN echo hi\n")
case("user-workdir-history", "history", "FROM scratch\nUSER 1\nWORKDIR /w\nSTOPSIGNAL 3\n")
case(
    "cmd-history",
    "history",
    'FROM scratch\nCMD echo hi\nENTRYPOINT ["a"]\nSHELL ["/bin/x", "-y"]\n',
)
case("healthcheck-history", "history", "FROM scratch\nHEALTHCHECK --retries=2 CMD true\n")
case("heredoc-run-history", "history", "FROM @BASE@\nRUN <<EOF\necho a > /a\necho b > /b\nEOF\n")
case("workdir-run-history", "history", "FROM @BASE@\nWORKDIR /w\nRUN touch f\n")
case(
    "copy-from-history",
    "history",
    "FROM @BASE@ AS a\nRUN echo x > /x\nFROM scratch\nCOPY --from=a /x /y\n",
)
case("env-run-history", "history", "FROM @BASE@\nENV A=1\nRUN echo $A > /a\n")
# --- parser --------------------------------------------------------------------------------
case("lowercase", "parser", "from scratch\nenv A=1\nLaBeL b=2\n")
case("comment-in-continuation", "parser", "FROM scratch\nENV A=1 \\\n# comment\n B=2\n")
case("blank-in-continuation", "parser", "FROM scratch\nENV A=1 \\\n\n B=2\n")
case("escape-backtick", "parser", "# escape=`\nFROM scratch\nENV A=c:\\dir `\n B=2\n")
case("escape-backtick-copy", "parser", "# escape=`\nFROM scratch\nCOPY a.txt c:\\x\\\n")
case("escaped-escape-eol", "parser", "FROM scratch\nENV A=x\\\\\nENV B=y\n")
case("trailing-space-continuation", "parser", "FROM scratch\nENV A=1 \\  \n B=2\n")
case("continuation-eof", "parser", "FROM scratch\nENV A=1 \\\n")
case("crlf", "parser", "FROM scratch\r\nENV A=1\r\nLABEL b=2\r\n")
case("bom", "parser", "\ufeffFROM scratch\nENV A=1\n")
case("leading-space", "parser", "  FROM scratch\n\tENV A=1\n")
case("directive-after-shebang", "parser", "#!/bin/x\n# escape=`\nFROM scratch\nENV A=a\\b\n")
case("directive-late", "parser", "FROM scratch\n# escape=`\nENV A=a\\b\n")
case("directive-spaced", "parser", "#   escape   =   `\nFROM scratch\nENV A=1 `\n B=2\n")
case("directive-uppercase", "parser", "# ESCAPE=`\nFROM scratch\nENV A=1 `\n B=2\n")
case("directive-twice", "parser", "# escape=`\n# escape=\\\nFROM scratch\nENV A=1\n")
case("directive-unknown-first", "parser", "# foo=bar\n# escape=`\nFROM scratch\nENV A=1\n")
case("flags-double-dash", "parser", "FROM scratch\nCOPY -- a.txt /x\n")
case("flags-equals-missing", "parser", "FROM scratch\nCOPY --chown a.txt /x\n")
case("json-single-element", "parser", 'FROM scratch\nCMD ["only"]\n')
case("json-spaces", "parser", 'FROM scratch\nCMD   [ "a" ,  "b" ]   \n')
case("json-nested", "parser", 'FROM scratch\nCMD ["echo", ["x"]]\n')
case("json-number", "parser", 'FROM scratch\nCMD ["echo", 1]\n')
case("json-object", "parser", 'FROM scratch\nCMD {"a": "b"}\n')
case("json-unclosed", "parser", 'FROM scratch\nCMD ["echo"\n')
case("comment-trailing-not-comment", "parser", "FROM scratch\nENV A=1 # not a comment\n")
case("indented-comment", "parser", "FROM scratch\n   # comment\nENV A=1\n")
case("many-blank-lines", "parser", "\n\n\nFROM scratch\n\n\nENV A=1\n\n")
case("continuation-comment-last", "parser", "FROM scratch\nENV A=1 \\\n# only comment\n")
case("env-equals-in-value", "parser", "FROM scratch\nENV A=b=c D==e\n")
case("label-equals-quotes", "parser", 'FROM scratch\nLABEL "a=b"=c\n')
case("volume-json-one", "parser", 'FROM scratch\nVOLUME ["/v"]\n')
case("from-lower-as", "parser", "FROM scratch as base\nENV A=1\nFROM base\n")
case("keyword-tab", "parser", "FROM scratch\nENV\tA=1\n")
case("run-continuation-spaces", "parser", "FROM @BASE@\nRUN echo a \\\n    b \\\n    c > /out\n")
case("run-escape-backtick", "parser", "# escape=`\nFROM @BASE@\nRUN echo a `\n b > /out\n")
case("run-backslash-with-backtick", "parser", "# escape=`\nFROM @BASE@\nRUN echo a\\b > /out\n")
# --- expansion -----------------------------------------------------------------------------
case(
    "modifiers",
    "expansion",
    "FROM scratch\nENV A=x\nENV B=${A}y C=$A-z D='$A' E=\"$A\" F=\\$A G=${A:-d} H=${U:-d} "
    "I=${A:+s} J=${U:+s} K=${A-d} L=${U-d}\n",
)
case(
    "empty-modifiers",
    "expansion",
    "FROM scratch\nENV E=\nENV A=${E:-d} B=${E-d} C=${E:+s} D=${E+s}\n",
)
case("positional", "expansion", "FROM scratch\nENV A=$1x B=${1} C=$12\n")
case("special-params", "expansion", "FROM scratch\nENV A=$@ B=$* C=$# D=$? E=$$ F=$! G=$-\n")
case("special-params-quoted", "expansion", 'FROM scratch\nENV A="$@" B="$*" C="$#"\n')
case("trailing-escape", "expansion", "FROM scratch\nENV A=abc\\\\\n")
case("escaped-space", "expansion", "FROM scratch\nENV A=a\\ b\n")
case("workdir-vars", "expansion", "FROM scratch\nENV A=/x B=y\nWORKDIR $A/$B\n")
case("nested-default", "expansion", "FROM scratch\nENV B=b\nENV A=${U:-${B}x}\n")
case("dq-escapes", "expansion", 'FROM scratch\nENV A="a\\"b" B="c\\\\d" C="e\\f" D="g\\$h"\n')
case("sq-backslash", "expansion", "FROM scratch\nENV A='a\\b' B='c\"d'\n")
case("dollar-alone", "expansion", 'FROM scratch\nENV A=$ B=a$ C="$"\n')
case("dollar-brace-bad", "expansion", "FROM scratch\nENV A=${B\n")
case("required-set", "expansion", "FROM scratch\nENV A=1\nENV B=${A:?missing}\n")
case("required-unset", "expansion", "FROM scratch\nENV B=${A:?is missing}\n")
case("arg-before-from", "expansion", "ARG V=1\nFROM scratch\nENV A=$V\n")
case("arg-before-from-redeclared", "expansion", "ARG V=1\nFROM scratch\nARG V\nENV A=$V\n")
case("arg-cli-override", "expansion", "FROM scratch\nARG A=1\nENV B=$A\n", args={"A": "cli"})
case(
    "env-over-arg",
    "expansion",
    "FROM @BASE@\nARG A=1\nENV A=2\nRUN echo $A > /a\n",
    args={"A": "cli"},
)
case("arg-undeclared-cli", "expansion", "FROM scratch\nENV B=${A:-unset}\n", args={"A": "cli"})
case("from-arg", "expansion", "ARG IMG=scratch\nFROM $IMG\nENV A=1\n")
case("from-arg-braces", "expansion", "ARG T=latest\nFROM @BASE@:${T}\nENV A=1\n")
case("env-self-ref", "expansion", "FROM scratch\nENV A=1\nENV A=$A:2 B=$A\n")
case("label-expansion-quotes", "expansion", "FROM scratch\nARG X=v\nLABEL 'k$X'=\"$X\" k2=$X\n")
case("user-expansion", "expansion", "FROM scratch\nARG U=1000\nUSER $U:${U}\n")
case("stopsignal-expansion", "expansion", "FROM scratch\nARG S=SIGTERM\nSTOPSIGNAL $S\n")
case("volume-expansion", "expansion", "FROM scratch\nARG V=/v\nVOLUME $V ${V}2\n")
case("cmd-no-expansion", "expansion", 'FROM scratch\nARG V=v\nCMD echo $V\nENTRYPOINT ["$V"]\n')
case("copy-expansion", "expansion", "FROM scratch\nARG F=a.txt\nARG D=/dst\nCOPY $F ${D}/\n")
case("dollar-in-filename", "expansion", "FROM scratch\nCOPY d\\$x.txt /\n")
case("unicode-value", "expansion", 'FROM scratch\nENV A=héllo B="日本"\n')
case("env-empty-quotes", "expansion", "FROM scratch\nENV A=\"\" B=''\n")
case("env-quote-concat", "expansion", "FROM scratch\nENV A=a\"b c\"'d e'f\n")
case("arg-no-default-empty", "expansion", "FROM scratch\nARG A\nENV B=x${A}y\n")
case("default-with-space", "expansion", "FROM scratch\nENV A=${U:-a b}\n")
case("modifier-quoted-word", "expansion", 'FROM scratch\nENV A=${U:-"q w"}\n')
# --- instructions (RUN, USER, mounts, SHELL) -----------------------------------------------
case("run-exit", "errors", "FROM @BASE@\nRUN exit 3\n")
case("run-json-missing", "errors", 'FROM @BASE@\nRUN ["/nonexistent"]\n')
case("user-numeric-run", "instructions", "FROM @BASE@\nUSER 1234\nRUN id > /tmp/id\n")
case("user-numeric-group-run", "instructions", "FROM @BASE@\nUSER 1234:2000\nRUN id > /tmp/id\n")
case("user-name-run", "instructions", "FROM @BASE@\nUSER builder\nRUN id > /tmp/id\n")
case("user-name-group-run", "instructions", "FROM @BASE@\nUSER builder:extra\nRUN id > /tmp/id\n")
case("user-unknown-run", "errors", "FROM @BASE@\nUSER nosuch\nRUN id > /tmp/id\n")
case("user-scratch-numeric", "instructions", "FROM scratch\nUSER 5\nCOPY a.txt /\n")
case(
    "cache-mount-mode",
    "instructions",
    "FROM @BASE@\nRUN --mount=type=cache,target=/c,mode=0700,uid=1000,gid=2000 "
    "stat -c '%a %u %g' /c > /out\n",
)
case(
    "cache-mount-default",
    "instructions",
    "FROM @BASE@\nRUN --mount=type=cache,target=/c stat -c '%a %u %g' /c > /out\n",
)
case(
    "tmpfs-mount",
    "instructions",
    "FROM @BASE@\nRUN --mount=type=tmpfs,target=/t touch /t/x && ls /t > /out\n",
)
case("bind-mount", "instructions", "FROM @BASE@\nRUN --mount=target=/ctx cat /ctx/a.txt > /out\n")
case(
    "bind-mount-from",
    "instructions",
    "FROM @BASE@ AS a\nRUN echo s > /s\nFROM @BASE@\n"
    "RUN --mount=from=a,source=/s,target=/m cat /m > /out\n",
)
case(
    "shell-run",
    "instructions",
    'FROM @BASE@\nSHELL ["/bin/sh", "-c", "echo shell > /shell; sh -c \\"$0\\""]\n'
    "RUN echo run > /run\n",
)
case(
    "derived-inherits",
    "instructions",
    'FROM @BASE@ AS a\nSHELL ["/bin/ash", "-c"]\nUSER builder\nWORKDIR /tmp/w\nENV X=1\nFROM a\n'
    'RUN echo "$X $0 $(id -u) $(pwd)" > /tmp/w/out\n',
)
case("workdir-created", "instructions", "FROM @BASE@\nWORKDIR /a/b/c\n")
case("workdir-user-owned", "instructions", "FROM @BASE@\nUSER builder\nWORKDIR /wk\n")
case("run-env-path", "instructions", 'FROM @BASE@\nRUN echo "$PATH" > /p\n')
case(
    "run-scratch-path",
    "instructions",
    'FROM scratch\nCOPY --from=@BASE@ / /\nRUN echo "$PATH" > /p\n',
)
case("run-hostname", "instructions", "FROM @BASE@\nRUN cat /etc/hosts | grep -c localhost > /h\n")
case("run-network-none", "instructions", "FROM @BASE@\nRUN --network=none echo ok > /n\n")
case("run-security-bad", "errors", "FROM @BASE@\nRUN --security=bogus true\n")
case("run-mount-bad-type", "errors", "FROM @BASE@\nRUN --mount=type=nope,target=/x true\n")
case("run-mount-no-target", "errors", "FROM @BASE@\nRUN --mount=type=cache true\n")
case("run-unknown-flag", "errors", "FROM @BASE@\nRUN --nope true\n")
case("run-rm-base-file", "instructions", "FROM @BASE@\nRUN rm /etc/group && mkdir -p /etc/x\n")
case(
    "run-args-env",
    "instructions",
    "FROM @BASE@\nARG A=1\nENV B=2\nRUN env | grep -E '^(A|B)=' | sort > /env\n",
)
# --- copy ----------------------------------------------------------------------------------
case("copy-file", "copy", "FROM scratch\nCOPY a.txt /\n")
case("copy-two-to-dir", "copy", "FROM scratch\nCOPY a.txt b.txt /d/\n")
case("copy-dir", "copy", "FROM scratch\nCOPY dir /d\n")
case("copy-dir-slash", "copy", "FROM scratch\nCOPY dir/ /d/\n")
case("copy-glob", "copy", "FROM scratch\nCOPY *.txt /d/\n")
case("copy-glob-not-bang", "copy", "FROM scratch\nCOPY [!a]*.txt /d/\n")
case("copy-glob-not-caret", "copy", "FROM scratch\nCOPY [^a]*.txt /d/\n")
case("copy-glob-question", "copy", "FROM scratch\nCOPY ?1 ?2 /d/\n")
case("copy-glob-class", "copy", "FROM scratch\nCOPY [a-b].txt /d/\n")
case("copy-glob-not-range", "copy", "FROM scratch\nCOPY [^a-b]*.txt /d/\n")
case("copy-glob-bang-range", "copy", "FROM scratch\nCOPY [!a-c]* /d/\n")
case("copy-glob-ranges", "copy", "FROM scratch\nCOPY [x-y][0-9] [c-c]?md /d/\n")
case("copy-glob-reversed-range", "copy", "FROM scratch\nCOPY [z-a]* a.txt /d/\n")
case("copy-glob-escaped", "copy", 'FROM scratch\nCOPY ["[\\\\^a]*.txt", "/d/"]\n')
case("copy-glob-escaped-star", "copy", 'FROM scratch\nCOPY ["a\\\\*", "*.md", "/d/"]\n')
case("copy-glob-under-dir", "copy", "FROM scratch\nCOPY dir/[^.]* /d/\n")
case("copy-glob-dir-class", "copy", "FROM scratch\nCOPY [d]ir/*.txt /d/\n")
case("copy-glob-unterminated", "errors", "FROM scratch\nCOPY [a /d/\n")
case("copy-glob-unterminated-later", "errors", "FROM scratch\nCOPY a* x[ /d/\n")
case("copy-glob-empty-class", "errors", "FROM scratch\nCOPY []a]* /d/\n")
case("copy-glob-dash-first", "errors", "FROM scratch\nCOPY [-a]* /d/\n")
case("copy-glob-bad-under-dir", "errors", "FROM scratch\nCOPY dir/*/[ /d/\n")
case("add-glob-unterminated", "errors", "FROM scratch\nADD [^ /d/\n")
case("copy-space-quoted", "copy", 'FROM scratch\nCOPY "sp ace.txt" /\n')
case("copy-json-space", "copy", 'FROM scratch\nCOPY ["sp ace.txt", "/x y"]\n')
case("copy-chown-numeric", "copy", "FROM scratch\nCOPY --chown=1000:1000 a.txt /\n")
case("copy-chown-name", "copy", "FROM @BASE@\nCOPY --chown=builder a.txt /\n")
case("copy-chown-name-group", "copy", "FROM @BASE@\nCOPY --chown=builder:extra a.txt /\n")
case("copy-chmod", "copy", "FROM scratch\nCOPY --chmod=600 a.txt /\nCOPY --chmod=755 dir /d\n")
case("copy-link", "copy", "FROM scratch\nCOPY --link a.txt /l/\n")
case("copy-symlink", "copy", "FROM scratch\nCOPY link /\n")
case("add-dir", "copy", "FROM scratch\nADD dir /\n")
case("copy-relative-dest", "copy", "FROM scratch\nWORKDIR /w\nCOPY a.txt rel/\nCOPY b.txt .\n")
case("copy-hidden", "copy", "FROM scratch\nCOPY dir/.hidden /\n")
case("copy-dot", "copy", "FROM scratch\nCOPY . /all/\n")
case(
    "copy-dockerignore",
    "copy",
    "FROM scratch\nCOPY . /all/\n",
    files={".dockerignore": "*.txt\n!b.txt\ndir/sub\n"},
)
case(
    "copy-dockerignore-dir",
    "copy",
    "FROM scratch\nCOPY dir /d\n",
    files={".dockerignore": "dir/one.txt\n"},
)
case("copy-overwrite-dir-file", "copy", "FROM scratch\nCOPY a.txt /x\nCOPY b.txt /x\n")
case("copy-to-file-name", "copy", "FROM scratch\nCOPY a.txt /new-name\n")
case("copy-exec-bit", "copy", "FROM scratch\nCOPY run.sh /\n")
case("copy-from-image", "copy", "FROM scratch\nCOPY --from=@BASE@ /etc/passwd /p\n")
case(
    "stages-image-read-by-from",
    "stages",
    "FROM @BASE@\nCOPY --from=@BASE@ /etc/passwd /p\n"
    "RUN --mount=from=@BASE@:latest,target=/m cat /m/etc/group > /g\n"
    "COPY --from=@BASE@:latest /bin/true /t\n",
)
case(
    "stages-image-read-by-from-and-stage",
    "stages",
    "FROM @BASE@ AS a\nRUN echo a > /a\nFROM scratch\nCOPY --from=a /a /a\n"
    "COPY --from=@BASE@ /etc/passwd /p\n",
)
case("copy-missing", "errors", "FROM scratch\nCOPY nope.txt /\n")
case("copy-glob-none", "errors", "FROM scratch\nCOPY *.none /\n")
case("copy-many-not-dir", "errors", "FROM scratch\nCOPY a.txt b.txt /notdir\n")
case("copy-one-arg", "errors", "FROM scratch\nCOPY a.txt\n")
case("copy-chown-unknown", "errors", "FROM @BASE@\nCOPY --chown=nosuch a.txt /\n")
case("copy-chmod-bad", "errors", "FROM scratch\nCOPY --chmod=abc a.txt /\n")
case("copy-unknown-flag", "errors", "FROM scratch\nCOPY --nope a.txt /\n")
case("add-unknown-flag", "errors", "FROM scratch\nADD --from=x a.txt /\n")
case("copy-from-missing-path", "errors", "FROM @BASE@ AS a\nFROM scratch\nCOPY --from=a /nope /\n")
# --- stages --------------------------------------------------------------------------------
case(
    "stages-named",
    "stages",
    "FROM @BASE@ AS build\nRUN echo b > /b\nFROM scratch\nCOPY --from=build /b /\n",
)
case("stages-index", "stages", "FROM @BASE@\nRUN echo b > /b\nFROM scratch\nCOPY --from=0 /b /\n")
case(
    "stages-target",
    "stages",
    "FROM scratch AS a\nENV A=1\nFROM scratch AS b\nENV B=1\n",
    target="a",
)
case(
    "stages-global-arg", "stages", "ARG G=g\nFROM scratch AS a\nARG G\nENV A=$G\nFROM a\nENV B=$G\n"
)
case("stages-env-inherit", "stages", "FROM scratch AS a\nENV A=1\nLABEL l=1\nFROM a\nENV B=$A\n")
case("stages-arg-not-inherited", "stages", "FROM scratch AS a\nARG A=1\nFROM a\nENV B=${A:-none}\n")
case("stages-from-arg", "stages", "ARG S=a\nFROM scratch AS a\nENV A=1\nFROM $S\nENV B=1\n")
case(
    "stages-onbuild", "stages", "FROM @BASE@ AS a\nONBUILD RUN echo trig > /trig\nFROM a\nENV X=1\n"
)
case("stages-onbuild-copy", "stages", "FROM scratch AS a\nONBUILD COPY a.txt /\nFROM a\nENV X=1\n")
case("stages-unused-fails", "stages", "FROM @BASE@ AS a\nRUN exit 1\nFROM scratch\nENV A=1\n")
case("stages-case-insensitive", "stages", "FROM scratch AS Build\nENV A=1\nFROM build\n")
case(
    "stages-cycle",
    "errors",
    "FROM scratch AS a\nCOPY --from=b /x /\nFROM scratch AS b\nCOPY --from=a /y /\n",
)
case("stages-dup-name", "errors", "FROM scratch AS a\nFROM scratch AS a\n")
case("stages-bad-name", "errors", "FROM scratch AS 1-x!\n")
case("stages-target-missing", "errors", "FROM scratch AS a\n", target="nope")
case("stages-copy-from-self", "errors", "FROM scratch AS a\nCOPY --from=a /x /\n")
case("stages-from-missing-as", "errors", "FROM scratch AS\n")
case("stages-from-extra", "errors", "FROM scratch a b\n")
# --- heredocs ------------------------------------------------------------------------------
case("heredoc-run", "heredoc", "FROM @BASE@\nRUN <<EOF\necho a > /a\nEOF\n")
case("heredoc-chomp", "heredoc", "FROM @BASE@\nRUN <<-EOF\n\techo a > /a\n\tEOF\n")
case("heredoc-quoted", "heredoc", "FROM @BASE@\nARG V=v\nRUN <<'EOF'\necho \"$V\" > /a\nEOF\n")
case("heredoc-expanded", "heredoc", 'FROM @BASE@\nARG V=v\nRUN <<EOF\necho "$V" > /a\nEOF\n')
case("heredoc-copy", "heredoc", "FROM scratch\nARG V=v\nCOPY <<EOF /f\nhello $V\nEOF\n")
case("heredoc-copy-quoted", "heredoc", 'FROM scratch\nARG V=v\nCOPY <<"EOF" /f\nhello $V\nEOF\n')
case("heredoc-copy-two", "heredoc", "FROM scratch\nCOPY <<A <<B /d/\na\nA\nb\nB\n")
case("heredoc-stdin", "heredoc", "FROM @BASE@\nRUN cat <<EOF > /f\nline\nEOF\n")
case("heredoc-two-stdin", "heredoc", "FROM @BASE@\nRUN cat <<A > /a && cat <<B > /b\nx\nA\ny\nB\n")
case("heredoc-triple", "heredoc", "FROM @BASE@\nRUN cat <<<word > /f\n")
case("heredoc-in-quotes", "heredoc", 'FROM @BASE@\nRUN echo "<<EOF" > /f\n')
case("heredoc-name-dot", "heredoc", "FROM @BASE@\nRUN cat <<E.F > /f\nx\nE.F\n")
case("heredoc-name-partly-quoted", "heredoc", 'FROM @BASE@\nRUN cat <<E"O"F > /f\nx $HOME\nEOF\n')
case("heredoc-fd", "heredoc", "FROM @BASE@\nRUN cat 3<<EOF /dev/fd/3 > /f || true\nx\nEOF\n")
case("heredoc-shebang", "heredoc", "FROM @BASE@\nRUN <<EOF\n#!/bin/sh\necho sb > /sb\nEOF\n")
case("heredoc-json-form", "heredoc", 'FROM @BASE@\nRUN ["sh", "-c", "echo <<EOF > /f"]\n')
case("heredoc-unterminated", "errors", "FROM @BASE@\nRUN <<EOF\necho a\n")
case("heredoc-empty", "heredoc", "FROM scratch\nCOPY <<EOF /empty\nEOF\n")
case("heredoc-space-name", "heredoc", "FROM @BASE@\nRUN cat << EOF > /f\nx\nEOF\n")
case("heredoc-chmod", "heredoc", "FROM scratch\nCOPY --chmod=755 <<EOF /s\n#!/bin/sh\nEOF\n")
# --- errors --------------------------------------------------------------------------------
case("no-from", "errors", "ENV A=1\n")
case("empty", "errors", "# only a comment\n")
case("unknown-instruction", "errors", "FROM scratch\nFOO bar\n")
case("env-no-value", "errors", "FROM scratch\nENV A\n")
case("env-no-name", "errors", "FROM scratch\nENV =x\n")
case("label-no-value", "errors", "FROM scratch\nLABEL a\n")
case("arg-empty", "errors", "FROM scratch\nARG\n")
case("expose-bad", "errors", "FROM scratch\nEXPOSE abc\n")
case("expose-bad-proto", "errors", "FROM scratch\nEXPOSE 80/xyz\n")
case("expose-empty", "errors", "FROM scratch\nEXPOSE\n")
case("stopsignal-bad", "errors", "FROM scratch\nSTOPSIGNAL NOPE\n")
case("healthcheck-bad-duration", "errors", "FROM scratch\nHEALTHCHECK --interval=5 CMD true\n")
case("healthcheck-short-duration", "errors", "FROM scratch\nHEALTHCHECK --interval=1ms CMD true\n")
case("healthcheck-retries-bad", "errors", "FROM scratch\nHEALTHCHECK --retries=x CMD true\n")
case("healthcheck-no-cmd", "errors", "FROM scratch\nHEALTHCHECK true\n")
case(
    "healthcheck-start-interval",
    "errors",
    "FROM scratch\nHEALTHCHECK --start-interval=5s CMD true\n",
)
case("shell-not-json", "errors", "FROM scratch\nSHELL /bin/sh -c\n")
case("onbuild-onbuild", "errors", "FROM scratch\nONBUILD ONBUILD RUN true\n")
case("onbuild-from", "errors", "FROM scratch\nONBUILD FROM scratch\n")
case("onbuild-maintainer", "errors", "FROM scratch\nONBUILD MAINTAINER me\n")
case("onbuild-empty", "errors", "FROM scratch\nONBUILD\n")
case("from-unknown-image", "errors", "FROM @BASE@-nope\n")
case("from-empty-arg", "errors", "ARG I\nFROM $I\n")
case("from-bad-platform", "errors", "FROM --platform=nope/x scratch\n")
case("escape-invalid", "errors", "# escape=x\nFROM scratch\n")
case("maintainer-empty", "errors", "FROM scratch\nMAINTAINER\n")
case("workdir-empty", "errors", "FROM scratch\nWORKDIR\n")
case("user-empty", "errors", "FROM scratch\nUSER\n")
case("cmd-empty", "errors", "FROM scratch\nCMD\n")
case("volume-empty-json", "errors", "FROM scratch\nVOLUME []\n")
case("volume-empty-string", "errors", 'FROM scratch\nVOLUME [""]\n')
case("env-unterminated-quote", "errors", 'FROM scratch\nENV A="abc\n')
case("label-unterminated-quote", "errors", "FROM scratch\nLABEL a='abc\n")
case("instruction-before-from", "errors", "RUN true\nFROM scratch\n")
case("arg-bad-name", "errors", "FROM scratch\nARG A-B=1\nENV X=1\n")
case("copy-from-flag-empty", "errors", "FROM scratch\nCOPY --from= a.txt /\n")
case("add-chown-unknown", "errors", "FROM @BASE@\nADD --chown=nosuch:nogroup a.txt /\n")
case("flag-twice", "errors", "FROM scratch\nCOPY --chmod=600 --chmod=644 a.txt /\n")
case("flag-bool-value", "errors", "FROM scratch\nCOPY --link=maybe a.txt /\n")
case("run-no-command", "errors", "FROM @BASE@\nRUN\n")
case("entrypoint-json-nested", "errors", 'FROM scratch\nENTRYPOINT ["a", ["b"]]\n')
# --- build context and precedence ----------------------------------------------------------
#: a context path of about 3,800 characters: within PATH_MAX, but not once under a state root
_DEEP = "/".join(["d" * 190] * 20)
case("context-deep", "copy", "FROM scratch\nCOPY deep /deep\n", files={f"deep/{_DEEP}/f": "x\n"})
case(
    "stages-arg-cli-precedence",
    "stages",
    "ARG V=global\nFROM scratch AS a\nARG V\nENV A=$V\nFROM a\nARG V=local\nENV B=$V\n",
    args={"V": "cli"},
)
case(
    "stages-env-over-cli-arg",
    "stages",
    "FROM scratch AS a\nENV V=env\nFROM a\nARG V=default\nENV B=$V\n",
    args={"V": "cli"},
)
case(
    "stages-run-sees-inherited",
    "stages",
    "FROM @BASE@ AS a\nARG X=x\nENV Y=y\nWORKDIR /w\nUSER builder\nFROM a\n"
    'RUN echo "$X $Y $(pwd) $(id -u)" > /tmp/out\n',
)
# --- the order instructions are refused in ----------------------------------------------------
# BuildKit splits the whole file first, then reads instructions one by one: an instruction's
# missing arguments are told before a later instruction's unknown name, and the reverse.
case("order-from-args-then-unknown", "errors", "FROM\nFOO bar\n")
case("order-expose-then-unknown", "errors", "FROM scratch\nEXPOSE\nFOO bar\n")
case("order-copy-then-unknown", "errors", "FROM scratch\nCOPY a.txt\nFOO bar\n")
case("order-add-then-unknown", "errors", "FROM scratch\nADD a.txt\nFOO bar\n")
case("order-unknown-then-expose", "errors", "FROM scratch\nFOO bar\nEXPOSE\n")
case("order-label-then-unknown", "errors", "FROM scratch\nLABEL\nFOO bar\n")
case("order-onbuild-then-unknown", "errors", "FROM scratch\nONBUILD\nFOO bar\n")
case("order-workdir-then-unknown", "errors", "FROM scratch\nWORKDIR\nFOO bar\n")
case("order-healthcheck-then-unknown", "errors", "FROM scratch\nHEALTHCHECK\nFOO bar\n")
case("order-flag-then-unknown", "errors", "FROM scratch\nCOPY --nope a.txt /\nFOO bar\n")
case("order-unknown-before-from", "errors", "ARG A\nFOO bar\nFROM scratch\n")
case("order-no-stage-then-unknown", "errors", "RUN true\nFOO bar\nFROM scratch\n")
case("order-cmd-empty-then-unknown", "errors", "FROM scratch\nCMD\nFOO bar\n")
case("continuation-only-at-end", "errors", "FROM scratch\n\\")
case("continuation-only-line", "errors", "FROM scratch\n \\\n")
case("continuation-after-empty-from", "errors", "FROM scratch\nFROM \n\\")
case("continuation-only-joins-next", "config", "FROM scratch\n \\\nLABEL a=b\n")
case("order-unknown-before-base-expansion", "errors", "FROM ${X}\nFOO bar\n")
case("order-unknown-before-meta-arg-expansion", "errors", "ARG A=${B\nFROM scratch\nFOO bar\n")
case("order-stage-name-before-unknown", "errors", "FROM scratch AS 1x\nFOO bar\n")
case("order-blank-base-after-parse", "errors", "FROM ${X}\nRUN true\n")
# Which COPY and ADD sources are Git repositories (BuildKit's ParseGitRef) or URLs.
for _name, _src in (
    ("scp-form", "git@example.com:owner/repo.git"),
    ("scp-form-other-user", "user-1@host.example:path/repo"),
    ("ssh", "ssh://host.example/repo"),
    ("git-scheme", "git://host.example/repo"),
    ("https-dot-git", "https://host.example/repo.git#main:sub"),
    ("https-file", "https://host.example/file.txt"),
    ("github-path", "github.com/owner/repo"),
):
    case(f"copy-source-{_name}", "errors", f"FROM scratch\nCOPY {_src} /r/\n")
# A source that is missing, and its folder too (BuildKit names the folder it cannot walk).
for _name, _src in (
    ("folder", "nope/x"),
    ("deeper", "nope/x/y"),
    ("in-dir", "dir/nope/x"),
    ("dir-child", "dir/nope"),
):
    case(f"copy-missing-{_name}", "errors", f"FROM scratch\nCOPY {_src} /r/\n")
    case(
        f"copy-missing-{_name}-from-image",
        "errors",
        f"FROM @BASE@ AS b\nFROM scratch\nCOPY --from=b {_src} /r/\n",
    )
case(
    "copy-missing-dir-file-from-image",
    "errors",
    "FROM @BASE@ AS b\nFROM scratch\nCOPY --from=b dir/one.txt/x /r/\n",
)
case("add-git-ref", "errors", "FROM scratch\nADD http://@REMOTE@/repo.git /r/\n")
# --- how the frontend finds its inputs ---------------------------------------------------------
# Every combination of the layout (context and Dockerfile apart, or in one folder), the name the
# build asks for (the ``filename`` option), where the Dockerfile really is, and which ignore
# files exist: the context's ``.dockerignore`` and one beside the Dockerfile. ``COPY .`` shows
# which ignore file applied (each excludes different files) and which files were read.
_ASKED = ("", "Dockerfile", "dockerfile", "./Dockerfile", "sub/Dockerfile", "app.df")
_AT = ("Dockerfile", "dockerfile", "sub/Dockerfile", "sub/dockerfile", "app.df")
_IGNORES = ("none", "context", "beside", "both")


def _slug(path: str) -> str:
    return path.replace("./", "dot-").replace("/", "-").replace(".", "-") or "default"


for _one in (False, True):
    for _asked in _ASKED:
        for _at in _AT:
            for _ignore in _IGNORES:
                case(
                    f"inputs-{'one' if _one else 'two'}-{_slug(_asked)}-at-{_slug(_at)}-{_ignore}",
                    "inputs",
                    "FROM scratch\nCOPY . /out/\n",
                    filename=_asked,
                    dockerfile_at=_at,
                    files={".dockerignore": "a.txt\n"} if _ignore in ("context", "both") else {},
                    dockerfile_files=(
                        {f"{_at}.dockerignore": "b.txt\ndir\n"}
                        if _ignore in ("beside", "both")
                        else {}
                    ),
                    one_folder=_one,
                )
# A Dockerfile or its ignore file that is a symlink: BuildKit follows the link inside the folder.
_LINKED = {
    "relative": {"Dockerfile": "real/Df"},
    "dotdot": {"Dockerfile": "../../real/Df"},
    "absolute": {"Dockerfile": "/real/Df"},
    "chain": {"Dockerfile": "l2", "l2": "real/Df"},
    "lower": {"dockerfile": "real/Df"},
    "ignore-beside": {"Dockerfile": "real/Df", "Dockerfile.dockerignore": "ign"},
    "dangling": {"Dockerfile": "nope"},
    "directory": {"Dockerfile": "real"},
}
for _one in (False, True):
    for _kind, _links in _LINKED.items():
        case(
            f"inputs-{'one' if _one else 'two'}-link-{_kind}",
            "inputs",
            "FROM scratch\nCOPY . /out/\n",
            dockerfile_at="real/Df",
            dockerfile_files={"ign": "b.txt\ndir\n"},
            dockerfile_links=_links,
            one_folder=_one,
        )
# --- the frontend's options (--opt) --------------------------------------------------------------
# Each option BuildKit's dockerfile.v0 reads, one at a time, with values it takes and values it
# refuses; a RUN shows what the container got (hostname, hosts, limits, /dev/shm, network).
_PROBE = (
    "FROM @BASE@\n"
    "RUN mkdir /out && hostname > /out/hostname && cat /etc/hosts > /out/hosts"
    " && ulimit -Sn > /out/nofile && ulimit -Hn > /out/nofile-hard"
    " && ulimit -Su > /out/nproc && ulimit -Hu > /out/nproc-hard"
    " && df -k /dev/shm | awk 'NR==2 {print $2}' > /out/shm"
    " && (ls /sys/class/net | grep -qv '^lo$' && echo more || echo lo-only) > /out/net\n"
)
_OPTION_VALUES = {
    "hostname": ["myhost", "UPPER.example", "a" * 63, ""],
    "build-arg:BUILDKIT_SANDBOX_HOSTNAME": ["fromarg"],
    "add-hosts": [
        "a=1.2.3.4",
        "a=1.2.3.4,B=::1",
        "Host=10.0.0.1",
        # (not a=…,b=… again: BuildKit's cache key leaves the addresses out)
        '"c=1.2.3.4",d=5.6.7.8',
        "a=1.2.3.4,a=5.6.7.8",
        "a=notanip",
        "justahost",
        "a=1.2.3.4,",
        "a = 1.2.3.4",
        "",
    ],
    "ulimit": [
        "nofile=1024:2048",
        "nofile=512",
        "nproc=100:200",
        "nofile=1024:2048,nproc=50:60",
        "nofile=2048:1024",
        "bogus=1",
        "nofile=abc",
        "nofile",
        "NOFILE=100",
        "",
    ],
    "shm-size": ["134217728", "1048576", "0", "abc", "-1", "1m", ""],
    "force-network-mode": ["none", "host", "sandbox", "bogus", ""],
    "image-resolve-mode": ["pull", "local", "default", "bogus", ""],
    "no-cache": ["", "true"],
    "cgroup-parent": ["", "llbkit-test"],
}
for _key, _values in _OPTION_VALUES.items():
    for _n, _value in enumerate(_values):
        case(
            f"options-{_key.replace(':', '-').replace('_', '-').lower()}-{_n}",
            "options",
            _PROBE,
            options={_key: _value},
        )
# multi-platform (and its build arg, which wins): a map of platforms even for one.
_MULTI_PROBE = "FROM @MULTI@\nRUN cat /arch > /seen\n"
for _n, _options in enumerate(
    [
        {"multi-platform": "true"},
        {"multi-platform": "true", "platform": "linux/arm64"},
        {"multi-platform": "false"},
        {"multi-platform": "0", "platform": "linux/amd64,linux/arm64"},
        {"multi-platform": "yes"},
        {"build-arg:BUILDKIT_MULTI_PLATFORM": "1"},
        {"build-arg:BUILDKIT_MULTI_PLATFORM": "false", "multi-platform": "true"},
        {"build-arg:BUILDKIT_MULTI_PLATFORM": "", "multi-platform": "true"},
    ]
):
    case(f"options-multi-platform-{_n}", "options", _MULTI_PROBE, options=_options)
case(
    "options-hostname-and-arg",
    "options",
    _PROBE,
    options={"hostname": "fromopt", "build-arg:BUILDKIT_SANDBOX_HOSTNAME": "fromarg"},
)
# What the image config shows: labels, the platform.
_LABELLED = "FROM scratch\nLABEL a=dockerfile c=kept\n"
for _n, _labels in enumerate(
    [{"label:a": "opt"}, {"label:b": "x y"}, {"label:": "empty"}, {"label:e": ""}]
):
    case(f"options-label-{_n}", "options", _LABELLED, options=_labels)
for _n, _platform in enumerate(
    [
        "linux/arm64",
        "linux/arm/v7",
        "linux/amd64/v2",
        "windows/amd64",
        "LINUX/AMD64",
        "bogus",
        "linux",
        "darwin/arm64",
        "linux/arm64/v8",
        "",
    ]
):
    case(f"options-platform-{_n}", "options", _LABELLED, options={"platform": _platform})
case(
    "options-disable-fileop",
    "options",
    _LABELLED,
    options={"build-arg:BUILDKIT_DISABLE_FILEOP": "true"},
)
case("options-unknown-key", "options", _LABELLED, options={"nosuchoption": "1"})
# Docker's predefined proxy build args reach every RUN without an ARG (not the image's env).
# Each RUN differs (its number): BuildKit's cache key leaves the proxies out, so one recorded
# after another would be found cached.
_PROXY_PROBE = "FROM @BASE@\nRUN mkdir /out && (env | grep -i _proxy= | sort || true) > /out/p{}\n"
for _n, _proxies in enumerate(
    [
        {},
        {"build-arg:HTTP_PROXY": "http://p:3128"},
        {"build-arg:http_proxy": "http://lower:1", "build-arg:NO_PROXY": "a,b"},
        {
            "build-arg:Https_Proxy": "http://mixed:2",
            "build-arg:ALL_PROXY": "socks5://s:1",
            "build-arg:ftp_proxy": "ftp://f",
        },
    ]
):
    case(f"options-proxy-{_n}", "options", _PROXY_PROBE.format(_n), options=_proxies)

# The platform a stage is built for (tests/differential/platforms.py).
CASES += _platform_cases
# Named contexts (tests/differential/contexts.py).
CASES += _context_cases
# Remote build contexts (tests/differential/remote.py).
CASES += _remote_cases
# What a RUN step sees of its sandbox (tests/differential/sandbox.py).
CASES += _sandbox_cases
# RUN --mount=type=secret with the client's secrets (tests/differential/secrets.py).
CASES += _secret_cases
# RUN --mount=type=ssh with the client's agents (tests/differential/ssh_mounts.py).
CASES += _ssh_cases
# ADD of archives and URLs (tests/differential/archives.py).
CASES += _archive_cases
