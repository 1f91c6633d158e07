#!/usr/bin/env python3
"""Lists functions and initialisers in Sources/ longer than a limit (default 60 lines), and files over
400 lines, generated code aside: the layout rules of docs/architecture.md. Exit status 1 if any.
A brace counter, not a parser: string literals holding braces can confuse it."""
import pathlib, re, sys

limit = int(sys.argv[1]) if len(sys.argv) > 1 else 60
head = re.compile(r'^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|static|nonisolated|mutating|override|final|@discardableResult)\s+)*(?:func\s+\S+|init[?!]?)\s*[(<]')
found = 0
for path in sorted(pathlib.Path('Sources').rglob('*.swift')):
    if 'Generated' in path.parts:
        continue
    lines = path.read_text().split('\n')
    if len(lines) > 400:
        print(f'{path}: {len(lines)} lines (file)')
        found += 1
    i = 0
    while i < len(lines):
        if head.match(lines[i]):
            depth, opened, j = 0, False, i
            while j < len(lines):
                code = re.sub(r'"(?:\\.|[^"\\])*"', '""', lines[j].split('//')[0])
                depth += code.count('{') - code.count('}')
                opened = opened or '{' in code
                if opened and depth <= 0:
                    break
                if not opened and j > i + 5:
                    break  # a protocol requirement, no body
                j += 1
            if opened and j - i + 1 > limit:
                print(f'{path}:{i + 1}: {j - i + 1} lines: {lines[i].strip()[:80]}')
                found += 1
            i = j + 1 if opened else i + 1
        else:
            i += 1
sys.exit(1 if found else 0)
