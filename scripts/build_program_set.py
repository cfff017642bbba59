"""Build ``trl_ext/tasks/data/program_set.jsonl``: the builtin program set of the ABD (abduction: given a program
and its output, find the stdin) and DED (deduction: write a program from a problem statement that passes the
test cases) tasks. The 64 programs below were written for this project.

Every expected output is computed here by running the program (``python -I -c PROGRAM`` with the case's stdin),
never typed by hand; a program that exits non-zero, writes to stderr or prints nothing stops the build with an
error naming its id. Function-call cases are computed by loading the program as a module
(``runpy.run_path(..., run_name="__solution__")``) and calling the function.

One JSON object per line (keys sorted, ``ensure_ascii=False``), with exactly the keys

* ``id``: ``"prog-001"``, ``"prog-002"``, ... (unique, in order);
* ``prompt``: the DED problem statement (input format, output format, constraints; for rows with function-call
  cases also the function's interface);
* ``program``: a reference solution, a complete Python 3 program (standard library only, deterministic, reads
  stdin, prints the answer);
* ``inputs``: one example stdin and ``output``: the program's stdout on it;
* ``test_cases``: a JSON string ``{"test_cases": [case, ...]}``, each case either
  ``{"type": "stdin_stdout", "input": STDIN, "output": STDOUT}`` or
  ``{"type": "function_call", "fn_name": NAME, "input": [ARG, ...], "output": [RETURN_VALUE]}``.

Rebuild (the output is byte-identical from run to run)::

    python scripts/build_program_set.py
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "trl_ext" / "tasks" / "data" / "program_set.jsonl"
MAX_OUTPUT_CHARS = 2000
TIMEOUT_S = 10


class Spec(NamedTuple):
    prompt: str
    program: str
    stdins: list[str]  # the first one is the row's example ``inputs``
    fn: str | None = None  # top-level function with function-call cases
    calls: tuple[list[Any], ...] | list[list[Any]] = ()  # positional argument lists of the function-call cases


SPECS: list[Spec] = [
    # 001
    Spec(
        "Read two integers a and b from a single line of standard input, separated by one space. "
        "Print their sum a + b on one line. Constraints: -10^18 <= a, b <= 10^18.",
        """\
a, b = map(int, input().split())
total = a + b
print(total)
""",
        ["3 4\n", "-5 5\n", "1000000000000000000 1000000000000000000\n", "-7 -8\n"],
    ),
    # 002
    Spec(
        "Read one line holding a non-negative integer N written in decimal without a sign (1 to 100 digits). "
        "Print the sum of its decimal digits.",
        """\
s = input().strip()
total = 0
for ch in s:
    total += int(ch)
print(total)
""",
        ["12345\n", "0\n", "9" * 100 + "\n", "1000000\n"],
    ),
    # 003
    Spec(
        "Read one integer N (0 <= N <= 10^6). Print how many prime numbers are less than or equal to N. "
        "Also define a function `count_primes(n)` that returns the number of primes less than or equal to n "
        "as an int.",
        """\
import math


def count_primes(n):
    if n < 2:
        return 0
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, math.isqrt(n) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n + 1, i)))
    return sum(sieve)


if __name__ == "__main__":
    print(count_primes(int(input())))
""",
        ["10\n", "1\n", "2\n", "1000000\n"],
        "count_primes",
        [[10], [100], [0]],
    ),
    # 004
    Spec(
        "Read two positive integers a and b (1 <= a, b <= 10^12) on one line, separated by a space. "
        "Print their greatest common divisor and their least common multiple on one line, separated by a space.",
        """\
a, b = map(int, input().split())
x, y = a, b
while y:
    x, y = y, x % y
print(x, a // x * b)
""",
        ["12 18\n", "1 1\n", "7 13\n", "1000000000000 999999999999\n"],
    ),
    # 005
    Spec(
        "The Fibonacci numbers are F(0) = 0, F(1) = 1 and F(n) = F(n-1) + F(n-2) for n >= 2. "
        "Read one integer N (0 <= N <= 90) and print F(N).",
        """\
n = int(input())
a, b = 0, 1
for _ in range(n):
    a, b = b, a + b
print(a)
""",
        ["10\n", "0\n", "1\n", "90\n"],
    ),
    # 006
    Spec(
        "Read one line of text (at most 1000 characters). Print the number of vowels in it, where the vowels are "
        "a, e, i, o and u in upper or lower case (y is not a vowel). "
        "Also define a function `count_vowels(s)` that returns the number of vowels in the string s as an int.",
        """\
def count_vowels(s):
    return sum(1 for ch in s.lower() if ch in "aeiou")


if __name__ == "__main__":
    print(count_vowels(input()))
""",
        ["Hello World\n", "rhythm\n", "AEIOU aeiou\n", "\n"],
        "count_vowels",
        [["Programming"], [""], ["Queueing"]],
    ),
    # 007
    Spec(
        "Read one line containing 1 to 100 words separated by single spaces; each word consists of letters and "
        "digits. Print the line with the characters of every word reversed, keeping the words in their original "
        "order, separated by single spaces.",
        """\
words = input().split()
reversed_words = [w[::-1] for w in words]
print(" ".join(reversed_words))
""",
        ["hello world\n", "a\n", "abc 123 xyz\n", "Python is Fun\n"],
    ),
    # 008
    Spec(
        "Read one line of text (at most 1000 characters). Considering only its letters and digits and ignoring "
        "case, print YES if it reads the same forwards and backwards and NO otherwise. "
        "A line without any letters or digits counts as a palindrome.",
        """\
s = input()
cleaned = [ch.lower() for ch in s if ch.isalnum()]
if cleaned == cleaned[::-1]:
    print("YES")
else:
    print("NO")
""",
        ["A man, a plan, a canal: Panama\n", "hello\n", "!!\n", "No lemon, no melon\n"],
    ),
    # 009
    Spec(
        "Read two lines, each a word of 1 to 100 lowercase English letters. Print YES if the second word is an "
        "anagram of the first (the same letters with the same counts, in any order) and NO otherwise.",
        """\
first = input().strip()
second = input().strip()
if sorted(first) == sorted(second):
    print("YES")
else:
    print("NO")
""",
        ["listen\nsilent\n", "abc\nabd\n", "a\na\n", "aab\nabb\n"],
    ),
    # 010
    Spec(
        "The first line contains an integer K (0 <= K <= 25) and the second line a text of 1 to 200 characters. "
        "Shift every English letter K positions forward in the alphabet, wrapping around from z to a, keeping "
        "upper-case letters upper-case and lower-case letters lower-case; leave every other character unchanged. "
        "Print the resulting text.",
        """\
k = int(input())
text = input()
out = []
for ch in text:
    if "a" <= ch <= "z":
        out.append(chr((ord(ch) - ord("a") + k) % 26 + ord("a")))
    elif "A" <= ch <= "Z":
        out.append(chr((ord(ch) - ord("A") + k) % 26 + ord("A")))
    else:
        out.append(ch)
print("".join(out))
""",
        ["3\nHello, World!\n", "0\nabc\n", "25\nZebra xyz\n", "13\nwhy did the chicken cross the road?\n"],
    ),
    # 011
    Spec(
        "Read one line with a string of 1 to 500 lowercase letters. Print its run-length encoding: every maximal "
        "run of equal letters becomes the letter followed by the length of the run in decimal, so aaabcc becomes "
        "a3b1c2.",
        """\
s = input().strip()
parts = []
i = 0
while i < len(s):
    j = i
    while j < len(s) and s[j] == s[i]:
        j += 1
    parts.append(s[i] + str(j - i))
    i = j
print("".join(parts))
""",
        ["aaabcc\n", "z\n", "aaaaaaaaaaaa\n", "abab\n"],
    ),
    # 012
    Spec(
        "Read one line holding a run-length encoded string: a sequence of pairs, each a lowercase letter followed "
        "by a positive decimal count (a count may have several digits). Print the decoded string, in which each "
        "letter is repeated count times; it has at most 1000 characters. "
        "Also define a function `decode_rle(s)` that returns the decoded string for the encoded string s.",
        """\
def decode_rle(s):
    out = []
    i = 0
    while i < len(s):
        j = i + 1
        while j < len(s) and s[j].isdigit():
            j += 1
        out.append(s[i] * int(s[i + 1 : j]))
        i = j
    return "".join(out)


if __name__ == "__main__":
    print(decode_rle(input().strip()))
""",
        ["a3b1c2\n", "x12\n", "q1\n"],
        "decode_rle",
        [["a2b3"], ["z10"], ["m1n1o1"]],
    ),
    # 013
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers with absolute value at most "
        "10^9, separated by spaces. Print the integers sorted in non-decreasing order on one line, separated by "
        "single spaces.",
        """\
n = int(input())
values = list(map(int, input().split()))
values.sort()
print(" ".join(map(str, values)))
""",
        ["5\n3 1 4 1 5\n", "1\n42\n", "4\n-2 10 -30 0\n"],
    ),
    # 014
    Spec(
        "Read one line of 1 to 200 words separated by single spaces, each word made of lowercase letters. "
        "Print the distinct words in the order of their first occurrence, separated by single spaces.",
        """\
words = input().split()
seen = set()
result = []
for w in words:
    if w not in seen:
        seen.add(w)
        result.append(w)
print(" ".join(result))
""",
        ["the cat and the hat\n", "a a a\n", "one\n", "b a b c a\n"],
    ),
    # 015
    Spec(
        "The first line contains N (1 <= N <= 10^5) and the second line N integers with absolute value at most "
        "10^4. Print the largest possible sum of a non-empty contiguous subarray.",
        """\
n = int(input())
values = list(map(int, input().split()))
best = current = values[0]
for x in values[1:]:
    current = max(x, current + x)
    best = max(best, current)
print(best)
""",
        ["9\n-2 1 -3 4 -1 2 1 -5 4\n", "1\n-7\n", "3\n-3 -1 -2\n", "5\n1 2 3 4 5\n"],
    ),
    # 016
    Spec(
        "The first line contains N, the second line N integers a_1 ... a_N, the third line Q, followed by Q lines "
        "each with two integers l and r (1 <= l <= r <= N). For every query print the sum a_l + ... + a_r on its "
        "own line. Constraints: 1 <= N, Q <= 10^4 and |a_i| <= 10^6.",
        """\
import sys

data = sys.stdin.read().split()
n = int(data[0])
prefix = [0]
for x in data[1 : n + 1]:
    prefix.append(prefix[-1] + int(x))
q = int(data[n + 1])
pos = n + 2
out = []
for _ in range(q):
    left, right = int(data[pos]), int(data[pos + 1])
    pos += 2
    out.append(str(prefix[right] - prefix[left - 1]))
print("\\n".join(out))
""",
        ["5\n1 2 3 4 5\n3\n1 5\n2 3\n4 4\n", "1\n-9\n1\n1 1\n", "4\n10 -10 10 -10\n2\n1 4\n1 3\n"],
    ),
    # 017
    Spec(
        "The first line contains R and C (1 <= R, C <= 20), followed by R lines with C integers each. "
        "Print the transpose of the matrix: C lines with R integers each, separated by single spaces.",
        """\
r, c = map(int, input().split())
matrix = [input().split() for _ in range(r)]
for j in range(c):
    print(" ".join(matrix[i][j] for i in range(r)))
""",
        ["2 3\n1 2 3\n4 5 6\n", "1 1\n7\n", "3 1\n1\n2\n3\n"],
    ),
    # 018
    Spec(
        "Read a non-negative integer N (0 <= N <= 10^18) and print its binary representation without leading "
        "zeros (print 0 when N = 0). Also define a function `to_binary(n)` that returns this representation "
        "of n as a string.",
        """\
def to_binary(n):
    if n == 0:
        return "0"
    digits = []
    while n > 0:
        digits.append(str(n % 2))
        n //= 2
    return "".join(reversed(digits))


if __name__ == "__main__":
    print(to_binary(int(input())))
""",
        ["10\n", "0\n", "1000000000000000000\n"],
        "to_binary",
        [[5], [0], [255]],
    ),
    # 019
    Spec(
        "Read the whole of standard input, which may span several lines (at most 10^4 characters). "
        "Print the number of words in it, where a word is a maximal run of non-whitespace characters.",
        """\
import sys

text = sys.stdin.read()
words = text.split()
print(len(words))
""",
        ["hello world\nthis is  a test\n", "\n", "one\n", "  spaced   out\n\n\nwords here \n"],
    ),
    # 020
    Spec(
        "Read one line made only of the characters ( ) [ ] { } (0 to 1000 characters). Print YES if the brackets "
        "are balanced and properly nested and NO otherwise; an empty line is balanced.",
        """\
s = input().strip()
pairs = {")": "(", "]": "[", "}": "{"}
stack = []
ok = True
for ch in s:
    if ch in "([{":
        stack.append(ch)
    elif not stack or stack.pop() != pairs[ch]:
        ok = False
        break
print("YES" if ok and not stack else "NO")
""",
        ["([]{})\n", "([)]\n", "\n", "((((\n", "{[()()]}\n"],
    ),
    # 021
    Spec(
        "A robot starts at (0, 0). Read one line of 1 to 1000 moves, each one of the letters U, D, L and R: "
        "U adds 1 to y, D subtracts 1 from y, R adds 1 to x and L subtracts 1 from x. Print the final position as "
        "two integers x y on the first line and the Manhattan distance |x| + |y| from the start on the second line.",
        """\
moves = input().strip()
x = y = 0
steps = {"U": (0, 1), "D": (0, -1), "L": (-1, 0), "R": (1, 0)}
for m in moves:
    dx, dy = steps[m]
    x += dx
    y += dy
print(x, y)
print(abs(x) + abs(y))
""",
        ["UURDL\n", "L\n", "RRRRUUUU\n", "UDLR\n"],
    ),
    # 022
    Spec(
        "The first line contains the English name of a weekday (Monday, Tuesday, Wednesday, Thursday, Friday, "
        "Saturday or Sunday, capitalised like this) and the second line a non-negative integer N (N <= 10^9). "
        "Print the name of the weekday that comes N days after the given day.",
        """\
days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
start = input().strip()
n = int(input())
print(days[(days.index(start) + n) % 7])
""",
        ["Monday\n3\n", "Sunday\n0\n", "Friday\n1000000000\n", "Saturday\n8\n"],
    ),
    # 023
    Spec(
        "The first line contains N (2 <= N <= 1000), the second line N integers a_1 ... a_N and the third line a "
        "target integer T. Find indices i < j (1-based) with a_i + a_j = T; among all such pairs choose the one "
        "with the smallest i and, for that i, the smallest j. Print i and j separated by a space, or -1 if no "
        "such pair exists.",
        """\
n = int(input())
a = list(map(int, input().split()))
t = int(input())
answer = "-1"
for i in range(n):
    need = t - a[i]
    if need in a[i + 1 :]:
        answer = f"{i + 1} {a.index(need, i + 1) + 1}"
        break
print(answer)
""",
        ["4\n2 7 11 15\n9\n", "3\n1 2 3\n10\n", "5\n3 3 3 3 3\n6\n", "2\n-1 1\n0\n"],
    ),
    # 024
    Spec(
        "Read one line holding an arithmetic expression in reverse Polish notation: tokens separated by single "
        "spaces, each an integer (possibly negative, like -3) or one of the operators +, - and *. The expression "
        "is valid and every intermediate value fits in a 64-bit signed integer. Print its value. "
        "Also define a function `evaluate_rpn(expr)` that takes the expression as a string and returns its value "
        "as an int.",
        """\
def evaluate_rpn(expr):
    stack = []
    for tok in expr.split():
        if tok in ("+", "-", "*"):
            b = stack.pop()
            a = stack.pop()
            if tok == "+":
                stack.append(a + b)
            elif tok == "-":
                stack.append(a - b)
            else:
                stack.append(a * b)
        else:
            stack.append(int(tok))
    return stack[-1]


if __name__ == "__main__":
    print(evaluate_rpn(input()))
""",
        ["3 4 + 2 *\n", "5\n", "2 -3 * 10 -\n"],
        "evaluate_rpn",
        [["1 2 3 * +"], ["10 2 -"], ["-4"]],
    ),
    # 025
    Spec(
        "The first line contains N (1 <= N <= 1000), followed by N commands, one per line, for a queue of "
        "integers that starts empty: `push X` appends X at the back, `pop` removes the front element and prints "
        "it, `front` prints the front element without removing it and `size` prints the number of elements. "
        "A pop or front on an empty queue prints EMPTY instead. Print each result on its own line; at least one "
        "command prints something.",
        """\
from collections import deque

queue = deque()
for _ in range(int(input())):
    parts = input().split()
    if parts[0] == "push":
        queue.append(int(parts[1]))
    elif parts[0] == "size":
        print(len(queue))
    elif not queue:
        print("EMPTY")
    elif parts[0] == "pop":
        print(queue.popleft())
    else:
        print(queue[0])
""",
        ["6\npush 1\npush 2\nfront\npop\npop\npop\n", "1\nsize\n", "5\npush 5\npush 6\nsize\npop\nfront\n"],
    ),
    # 026
    Spec(
        "The first line contains R and C (1 <= R, C <= 20), followed by R lines with C integers each. "
        "Print R lines, each with the sum of the corresponding row, and then one more line with the C column "
        "sums separated by single spaces.",
        """\
r, c = map(int, input().split())
rows = [list(map(int, input().split())) for _ in range(r)]
for row in rows:
    print(sum(row))
columns = [sum(row[j] for row in rows) for j in range(c)]
print(" ".join(map(str, columns)))
""",
        ["2 3\n1 2 3\n4 5 6\n", "1 1\n-5\n", "3 2\n1 1\n2 2\n3 3\n"],
    ),
    # 027
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers with absolute value at most "
        "10^6. Print their arithmetic mean rounded to two decimal places, always with exactly two digits after "
        "the decimal point (for example 2.50).",
        """\
n = int(input())
values = list(map(int, input().split()))
mean = sum(values) / n
print(f"{mean:.2f}")
""",
        ["3\n1 2 4\n", "1\n5\n", "4\n-1 -2 -3 -5\n", "2\n1 2\n"],
    ),
    # 028
    Spec(
        "The first line contains N (1 <= N <= 100), followed by N lines each with an integer temperature C in "
        "degrees Celsius (-273 <= C <= 1000). For each one print a line `C -> F`, where C is the value as given "
        "and F = C * 9 / 5 + 32 is the temperature in degrees Fahrenheit with exactly two digits after the "
        "decimal point.",
        """\
n = int(input())
for _ in range(n):
    c = int(input())
    f = c * 9 / 5 + 32
    print(f"{c} -> {f:.2f}")
""",
        ["3\n0\n100\n-40\n", "1\n37\n", "2\n-273\n1\n"],
    ),
    # 029
    Spec(
        "Read two integers A and B (1 <= A <= B <= 10^9) on one line. Print how many leap years there are from "
        "year A to year B inclusive under the Gregorian rule: a year is a leap year if it is divisible by 4, "
        "except that years divisible by 100 are leap years only if they are also divisible by 400.",
        """\
def leaps_up_to(year):
    return year // 4 - year // 100 + year // 400


a, b = map(int, input().split())
print(leaps_up_to(b) - leaps_up_to(a - 1))
""",
        ["2000 2020\n", "1900 1900\n", "1 1000000000\n", "2024 2024\n"],
    ),
    # 030
    Spec(
        "Read a positive integer N (1 <= N <= 10^6). Repeatedly replace N by N / 2 when it is even and by "
        "3 * N + 1 when it is odd, until it becomes 1, and print the number of replacements made (0 for N = 1). "
        "Also define a function `collatz_steps(n)` that returns this number for n as an int.",
        """\
def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


if __name__ == "__main__":
    print(collatz_steps(int(input())))
""",
        ["6\n", "1\n", "27\n", "1000000\n"],
        "collatz_steps",
        [[7], [1], [97]],
    ),
    # 031
    Spec(
        "Read a positive integer N (1 <= N <= 10^9). Let S be the sum of its proper divisors (the positive "
        "divisors other than N itself; S = 0 for N = 1). Print S on the first line, and on the second line print "
        "perfect if S = N, abundant if S > N and deficient if S < N.",
        """\
n = int(input())
total = 0
d = 1
while d * d <= n:
    if n % d == 0:
        total += d
        if d != n // d:
            total += n // d
    d += 1
s = total - n
print(s)
print("perfect" if s == n else "abundant" if s > n else "deficient")
""",
        ["28\n", "12\n", "1\n", "1000000000\n"],
    ),
    # 032
    Spec(
        "Read an integer N (2 <= N <= 10^10). Print its prime factorisation: the prime factors in increasing order "
        "joined by ' * ' (space, asterisk, space), where a prime p occurring k > 1 times is written p^k; for "
        "example 360 is printed as 2^3 * 3^2 * 5.",
        """\
n = int(input())
parts = []
p = 2
while p * p <= n:
    k = 0
    while n % p == 0:
        n //= p
        k += 1
    if k:
        parts.append(f"{p}^{k}" if k > 1 else str(p))
    p += 1
if n > 1:
    parts.append(str(n))
print(" * ".join(parts))
""",
        ["360\n", "2\n", "9999999967\n", "1024\n"],
    ),
    # 033
    Spec(
        "Read one line with a binary number: 1 to 60 characters, each 0 or 1 (leading zeros are allowed). "
        "Print its value in decimal.",
        """\
bits = input().strip()
value = 0
for b in bits:
    value = value * 2 + (b == "1")
print(value)
""",
        ["1011\n", "0\n", "000111\n", "1" * 60 + "\n"],
    ),
    # 034
    Spec(
        "Read one line with a string of 1 to 1000 lowercase English letters. For every distinct letter, in "
        "alphabetical order, print a line with the letter and the number of times it occurs, separated by a "
        "space.",
        """\
s = input().strip()
counts = {}
for ch in s:
    counts[ch] = counts.get(ch, 0) + 1
for ch in sorted(counts):
    print(ch, counts[ch])
""",
        ["banana\n", "z\n", "abcabcabd\n"],
    ),
    # 035
    Spec(
        "Read one line of 1 to 200 words separated by single spaces, each made of letters only. Print the longest "
        "word on the first line (the first of them if several share the maximum length) and its length on the "
        "second line.",
        """\
words = input().split()
best = words[0]
for w in words[1:]:
    if len(w) > len(best):
        best = w
print(best)
print(len(best))
""",
        ["the quick brown fox\n", "a\n", "aa bb cc\n", "I love programming\n"],
    ),
    # 036
    Spec(
        "Read one line of words separated by single spaces; words consist of lowercase letters and digits. Print "
        "the line with the first character of every word converted to upper case and everything else unchanged. "
        "Also define a function `capitalize_words(s)` that returns the converted string for such a line s.",
        """\
def capitalize_words(s):
    return " ".join(w[:1].upper() + w[1:] for w in s.split(" "))


if __name__ == "__main__":
    print(capitalize_words(input()))
""",
        ["hello world\n", "a\n", "the 3rd time\n"],
        "capitalize_words",
        [["good morning"], ["x y z"]],
    ),
    # 037
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers with absolute value at most "
        "10^6. Print two lines: `even: E`, where E is the sum of the even values, and `odd: O`, where O is the sum "
        "of the odd values (a sum of no values is 0).",
        """\
n = int(input())
values = list(map(int, input().split()))
even = sum(x for x in values if x % 2 == 0)
odd = sum(x for x in values if x % 2 != 0)
print(f"even: {even}")
print(f"odd: {odd}")
""",
        ["5\n1 2 3 4 5\n", "1\n0\n", "4\n-3 -2 7 9\n"],
    ),
    # 038
    Spec(
        "Read an integer N (1 <= N <= 50). Print N lines: line i (counting from 1) consists of i characters # "
        "followed by N - i spaces, so that every line has exactly N characters including its trailing spaces.",
        """\
n = int(input())
for i in range(1, n + 1):
    line = "#" * i + " " * (n - i)
    print(line)
""",
        ["3\n", "1\n", "5\n"],
    ),
    # 039
    Spec(
        "The first line contains a time of day in 24-hour format HH:MM and the second line an integer M "
        "(0 <= M <= 10^6), a number of minutes. Print the time of day M minutes later, also as HH:MM with two "
        "digits each; the clock wraps around from 23:59 to 00:00.",
        """\
hh, mm = map(int, input().strip().split(":"))
m = int(input())
total = (hh * 60 + mm + m) % (24 * 60)
print(f"{total // 60:02d}:{total % 60:02d}")
""",
        ["23:30\n45\n", "00:00\n0\n", "09:05\n1000000\n", "12:59\n1\n"],
    ),
    # 040
    Spec(
        "Read a non-negative integer S (0 <= S <= 10^7), a number of seconds. Print it as H:MM:SS, where H is the "
        "number of whole hours written with at least two digits (padded with a leading zero when needed) and MM "
        "and SS are the remaining minutes and seconds with exactly two digits each.",
        """\
s = int(input())
hours, rest = divmod(s, 3600)
minutes, seconds = divmod(rest, 60)
print(f"{hours:02d}:{minutes:02d}:{seconds:02d}")
""",
        ["3661\n", "0\n", "10000000\n", "59\n"],
    ),
    # 041
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers. Print the second largest "
        "distinct value among them, or NONE if all the values are equal.",
        """\
n = int(input())
values = sorted(set(map(int, input().split())), reverse=True)
if len(values) < 2:
    print("NONE")
else:
    print(values[1])
""",
        ["5\n3 1 4 4 2\n", "1\n7\n", "3\n5 5 5\n", "4\n-1 -2 -3 -4\n"],
    ),
    # 042
    Spec(
        "The first line contains N and K (1 <= N <= 1000, 0 <= K <= 10^9) and the second line N integers. Rotate "
        "the list to the right by K positions (K times, the last element moves to the front) and print it with "
        "the values separated by single spaces. Also define a function `rotate_right(nums, k)` that takes a list "
        "of ints and K and returns the rotated list as a new list.",
        """\
def rotate_right(nums, k):
    if not nums:
        return []
    k %= len(nums)
    return nums[len(nums) - k :] + nums[: len(nums) - k]


if __name__ == "__main__":
    n, k = map(int, input().split())
    nums = list(map(int, input().split()))
    print(" ".join(map(str, rotate_right(nums, k))))
""",
        ["5 2\n1 2 3 4 5\n", "1 100\n9\n", "3 0\n1 2 3\n"],
        "rotate_right",
        [[[1, 2, 3, 4], 1], [[5, 6, 7], 7], [[10], 3]],
    ),
    # 043
    Spec(
        "Read two lines, each a non-decreasing list of 1 to 1000 integers separated by spaces. Print all the "
        "values of both lists merged into one non-decreasing list, on one line separated by single spaces.",
        """\
a = list(map(int, input().split()))
b = list(map(int, input().split()))
i = j = 0
merged = []
while i < len(a) and j < len(b):
    if a[i] <= b[j]:
        merged.append(a[i])
        i += 1
    else:
        merged.append(b[j])
        j += 1
merged += a[i:] + b[j:]
print(" ".join(map(str, merged)))
""",
        ["1 3 5\n2 4 6\n", "1\n1\n", "-5 0 10\n7\n", "1 2 3\n10 20\n"],
    ),
    # 044
    Spec(
        "Read an integer N (1 <= N <= 15). Print the first N rows of Pascal's triangle, one row per line with the "
        "numbers separated by single spaces: row 1 is 1, row 2 is 1 1, row 3 is 1 2 1, and every inner number is "
        "the sum of the two numbers above it.",
        """\
n = int(input())
row = [1]
for _ in range(n):
    print(" ".join(map(str, row)))
    row = [1] + [row[i] + row[i + 1] for i in range(len(row) - 1)] + [1]
""",
        ["5\n", "1\n", "15\n"],
    ),
    # 045
    Spec(
        "Read an integer N (1 <= N <= 100). For every i from 1 to N print one line: FizzBuzz if i is divisible by "
        "both 3 and 5, Fizz if only by 3, Buzz if only by 5, and the number i itself otherwise.",
        """\
n = int(input())
for i in range(1, n + 1):
    word = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")
    print(word or i)
""",
        ["15\n", "1\n", "100\n"],
    ),
    # 046
    Spec(
        "The first line contains N, M and P (1 <= N, M, P <= 10). It is followed by N lines with M integers each "
        "(matrix A) and then M lines with P integers each (matrix B); all entries have absolute value at most "
        "1000. Print the matrix product A x B as N lines of P integers separated by single spaces.",
        """\
import sys

data = list(map(int, sys.stdin.read().split()))
n, m, p = data[:3]
a = [data[3 + i * m : 3 + (i + 1) * m] for i in range(n)]
base = 3 + n * m
b = [data[base + i * p : base + (i + 1) * p] for i in range(m)]
for i in range(n):
    row = [sum(a[i][k] * b[k][j] for k in range(m)) for j in range(p)]
    print(" ".join(map(str, row)))
""",
        ["2 2 2\n1 2\n3 4\n5 6\n7 8\n", "1 3 1\n1 2 3\n4\n5\n6\n", "1 1 1\n-3\n4\n"],
    ),
    # 047
    Spec(
        "The first line contains R and C (1 <= R, C <= 20), followed by R lines of C integers. Print all the "
        "elements in clockwise spiral order, starting at the top-left corner and going right first, on one line "
        "separated by single spaces.",
        """\
r, c = map(int, input().split())
grid = [input().split() for _ in range(r)]
top, bottom, left, right = 0, r - 1, 0, c - 1
out = []
while top <= bottom and left <= right:
    out += [grid[top][j] for j in range(left, right + 1)]
    out += [grid[i][right] for i in range(top + 1, bottom + 1)]
    if top < bottom:
        out += [grid[bottom][j] for j in range(right - 1, left - 1, -1)]
    if left < right:
        out += [grid[i][left] for i in range(bottom - 1, top, -1)]
    top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
print(" ".join(out))
""",
        [
            "3 3\n1 2 3\n4 5 6\n7 8 9\n",
            "1 4\n1 2 3 4\n",
            "4 1\n1\n2\n3\n4\n",
            "3 4\n1 2 3 4\n5 6 7 8\n9 10 11 12\n",
        ],
    ),
    # 048
    Spec(
        "The first line contains R and C (1 <= R, C <= 50), followed by R lines of C characters, each # (land) or "
        ". (water). Print the number of islands, that is maximal groups of land cells connected horizontally or "
        "vertically. Also define a function `count_islands(grid)` that takes the grid as a list of R strings and "
        "returns the number of islands as an int.",
        """\
def count_islands(grid):
    rows, cols = len(grid), len(grid[0]) if grid else 0
    seen = [[False] * cols for _ in range(rows)]
    islands = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] != "#" or seen[r][c]:
                continue
            islands += 1
            seen[r][c] = True
            stack = [(r, c)]
            while stack:
                y, x = stack.pop()
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < rows and 0 <= nx < cols and grid[ny][nx] == "#" and not seen[ny][nx]:
                        seen[ny][nx] = True
                        stack.append((ny, nx))
    return islands


if __name__ == "__main__":
    r, c = map(int, input().split())
    print(count_islands([input().strip() for _ in range(r)]))
""",
        ["4 5\n##..#\n#...#\n..#..\n....#\n", "1 1\n.\n", "2 2\n##\n##\n"],
        "count_islands",
        [[["#.#", ".#.", "#.#"]], [["...", "..."]]],
    ),
    # 049
    Spec(
        "The first line contains R and C (1 <= R, C <= 50), followed by R lines of C characters: . is a free "
        "cell, # a wall, S the start and E the exit (exactly one S and one E). Each step moves up, down, left or "
        "right onto a cell that is not a wall and stays inside the grid. Print the minimum number of steps from S "
        "to E, or -1 if E cannot be reached.",
        """\
from collections import deque

r, c = map(int, input().split())
grid = [input().strip() for _ in range(r)]
start = next((i, j) for i in range(r) for j in range(c) if grid[i][j] == "S")
dist = {start: 0}
queue = deque([start])
answer = -1
while queue:
    y, x = queue.popleft()
    if grid[y][x] == "E":
        answer = dist[(y, x)]
        break
    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
        if 0 <= ny < r and 0 <= nx < c and grid[ny][nx] != "#" and (ny, nx) not in dist:
            dist[(ny, nx)] = dist[(y, x)] + 1
            queue.append((ny, nx))
print(answer)
""",
        ["3 4\nS..#\n.#..\n...E\n", "1 2\nSE\n", "3 3\nS#.\n##.\n..E\n", "2 5\nS.#.E\n.....\n"],
    ),
    # 050
    Spec(
        "The first line contains N (1 <= N <= 1000), followed by N lines, each either `deposit X` or `withdraw X` "
        "with 1 <= X <= 10^6. A bank balance starts at 0; a withdrawal larger than the current balance is "
        "rejected and leaves the balance unchanged. Print the final balance on the first line and the number of "
        "rejected withdrawals on the second line.",
        """\
balance = 0
rejected = 0
for _ in range(int(input())):
    op, amount = input().split()
    amount = int(amount)
    if op == "deposit":
        balance += amount
    elif amount > balance:
        rejected += 1
    else:
        balance -= amount
print(balance)
print(rejected)
""",
        [
            "4\ndeposit 100\nwithdraw 30\nwithdraw 100\ndeposit 5\n",
            "1\nwithdraw 5\n",
            "2\ndeposit 1000000\nwithdraw 1000000\n",
        ],
    ),
    # 051
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers. Print the length of the "
        "longest strictly increasing subsequence (not necessarily contiguous).",
        """\
from bisect import bisect_left

n = int(input())
tails = []
for x in map(int, input().split()):
    pos = bisect_left(tails, x)
    if pos == len(tails):
        tails.append(x)
    else:
        tails[pos] = x
print(len(tails))
""",
        ["8\n10 9 2 5 3 7 101 18\n", "1\n5\n", "5\n5 4 3 2 1\n", "6\n1 2 2 3 3 4\n"],
    ),
    # 052
    Spec(
        "The first line contains N (1 <= N <= 100), followed by N lines each with a non-empty word of lowercase "
        "letters. Print the longest common prefix of all the words, or a single - (minus sign) if that prefix is "
        "empty.",
        """\
n = int(input())
words = [input().strip() for _ in range(n)]
prefix = words[0]
for w in words[1:]:
    while not w.startswith(prefix):
        prefix = prefix[:-1]
print(prefix or "-")
""",
        ["3\nflower\nflow\nflight\n", "2\ndog\ncar\n", "1\nalone\n", "3\nabc\nabcd\nabce\n"],
    ),
    # 053
    Spec(
        "Read the whole of standard input: lowercase words separated by spaces and newlines (1 to 1000 words). "
        "Print every distinct word with its number of occurrences as `word count`, one per line, ordered by "
        "decreasing count and, among equal counts, alphabetically.",
        """\
import sys

counts = {}
for w in sys.stdin.read().split():
    counts[w] = counts.get(w, 0) + 1
for w, k in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
    print(w, k)
""",
        ["the cat the dog\nthe cat\n", "solo\n", "b a c\nc b a\n"],
    ),
    # 054
    Spec(
        "Read two lines, each a string of the same length (1 to 1000 characters). Print the number of positions "
        "at which the two strings have different characters. Also define a function `hamming_distance(a, b)` "
        "that returns this number for two strings a and b of equal length.",
        """\
def hamming_distance(a, b):
    return sum(1 for x, y in zip(a, b) if x != y)


if __name__ == "__main__":
    first = input()
    second = input()
    print(hamming_distance(first, second))
""",
        ["karolin\nkathrin\n", "a\na\n", "10110\n01001\n"],
        "hamming_distance",
        [["abc", "abd"], ["same", "same"], ["0000", "1111"]],
    ),
    # 055
    Spec(
        "Read a non-negative integer N with 1 to 1000 decimal digits. Replace N by the sum of its decimal digits "
        "again and again until it has a single digit, and print that digit.",
        """\
s = input().strip()
while len(s) > 1:
    s = str(sum(int(ch) for ch in s))
print(s)
""",
        ["9875\n", "0\n", "7\n", "9" * 1000 + "\n"],
    ),
    # 056
    Spec(
        "Read two integers A and B (1 <= A <= B <= 20000) on one line. Print, on one line separated by single "
        "spaces and in increasing order, all the numbers from A to B inclusive that are equal to the sum of their "
        "decimal digits each raised to the power of the number of digits (for example 153 = 1^3 + 5^3 + 3^3). "
        "Print NONE if there are none.",
        """\
a, b = map(int, input().split())
found = []
for x in range(a, b + 1):
    digits = str(x)
    if sum(int(d) ** len(digits) for d in digits) == x:
        found.append(digits)
print(" ".join(found) if found else "NONE")
""",
        ["100 500\n", "1 9\n", "10 99\n", "1 20000\n"],
    ),
    # 057
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers a_1 ... a_N. Print the number "
        "of inversions: pairs of indices i < j with a_i > a_j.",
        """\
n = int(input())
a = list(map(int, input().split()))
count = 0
for i in range(n):
    for j in range(i + 1, n):
        if a[i] > a[j]:
            count += 1
print(count)
""",
        ["5\n2 4 1 3 5\n", "1\n1\n", "4\n4 3 2 1\n", "3\n2 2 2\n"],
    ),
    # 058
    Spec(
        "The first line contains N (1 <= N <= 10^4) and the second line N integers. Print the value that occurs "
        "more than N / 2 times, or NONE if no value does.",
        """\
n = int(input())
values = list(map(int, input().split()))
candidate, votes = None, 0
for x in values:
    if votes == 0:
        candidate = x
    votes += 1 if x == candidate else -1
print(candidate if values.count(candidate) * 2 > n else "NONE")
""",
        ["7\n2 2 1 1 1 2 2\n", "1\n9\n", "4\n1 2 1 2\n", "5\n-1 -1 -1 3 4\n"],
    ),
    # 059
    Spec(
        "The first line contains N (1 <= N <= 1000) and the second line N integers. Print the list with all the "
        "zeros moved to the end while the non-zero values keep their relative order, on one line separated by "
        "single spaces.",
        """\
n = int(input())
values = list(map(int, input().split()))
non_zero = [x for x in values if x != 0]
result = non_zero + [0] * (n - len(non_zero))
print(" ".join(map(str, result)))
""",
        ["5\n0 1 0 3 12\n", "1\n0\n", "3\n4 5 6\n"],
    ),
    # 060
    Spec(
        "The first line contains N (1 <= N <= 1000), followed by N lines `name score`, where name is a word of "
        "letters and score an integer from 0 to 100. Print the name with the highest score on the first line (the "
        "first one in input order on a tie) and the average score with exactly two digits after the decimal point "
        "on the second line. Also define a function `summarize_scores(records)` that takes a list of "
        '[name, score] pairs and returns a dict {"best": name with the highest score (first on a tie), '
        '"total": sum of the scores, "count": number of records}.',
        """\
def summarize_scores(records):
    best_name, best_score = records[0]
    for name, score in records[1:]:
        if score > best_score:
            best_name, best_score = name, score
    return {"best": best_name, "total": sum(s for _, s in records), "count": len(records)}


if __name__ == "__main__":
    rows = []
    for _ in range(int(input())):
        name, score = input().split()
        rows.append([name, int(score)])
    summary = summarize_scores(rows)
    print(summary["best"])
    print(f"{summary['total'] / summary['count']:.2f}")
""",
        ["3\nalice 90\nbob 85\ncarol 90\n", "1\nzed 0\n", "4\na 1\nb 2\nc 3\nd 5\n"],
        "summarize_scores",
        [[[["x", 10], ["y", 20]]], [[["solo", 7]]], [[["p", 50], ["q", 50], ["r", 49]]]],
    ),
    # 061
    Spec(
        "Read two integers N and K (1 <= N <= 300, 1 <= K <= 1000) on one line. N people numbered 1 to N stand in "
        "a circle; counting starts at person 1, every K-th person is removed, and counting continues with the "
        "next person still in the circle. Print the numbers of the people in the order they are removed, on one "
        "line separated by single spaces.",
        """\
n, k = map(int, input().split())
people = list(range(1, n + 1))
order = []
idx = 0
while people:
    idx = (idx + k - 1) % len(people)
    order.append(people.pop(idx))
print(" ".join(map(str, order)))
""",
        ["7 3\n", "1 1\n", "5 1\n", "300 7\n"],
    ),
    # 062
    Spec(
        "Read two integers N and B on one line (0 <= N <= 10^18, 2 <= B <= 16). Print N written in base B with "
        "the digits 0-9 and the upper-case letters A-F, without leading zeros (print 0 when N = 0).",
        """\
n, base = map(int, input().split())
symbols = "0123456789ABCDEF"
digits = []
while n > 0:
    n, d = divmod(n, base)
    digits.append(symbols[d])
print("".join(reversed(digits)) or "0")
""",
        ["255 16\n", "0 2\n", "10 3\n", "1000000000000000000 7\n"],
    ),
    # 063
    Spec(
        "Read an integer N (1 <= N <= 3999) and print it in Roman numerals with the standard subtractive forms "
        "(IV, IX, XL, XC, CD, CM), so 1994 is MCMXCIV. Also define a function `int_to_roman(n)` that returns the "
        "numeral for n as a string.",
        """\
VALUES = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
    (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]


def int_to_roman(n):
    out = []
    for value, numeral in VALUES:
        while n >= value:
            out.append(numeral)
            n -= value
    return "".join(out)


if __name__ == "__main__":
    print(int_to_roman(int(input())))
""",
        ["1994\n", "1\n", "3999\n"],
        "int_to_roman",
        [[4], [58], [2024]],
    ),
    # 064
    Spec(
        "Read an integer N (1 <= N <= 30). Print an N by N checkerboard as N lines of exactly N characters: the "
        "cell in row r and column c (both counted from 0) is # when r + c is even and a space otherwise, so some "
        "lines end with spaces.",
        """\
n = int(input())
for r in range(n):
    line = "".join("#" if (r + c) % 2 == 0 else " " for c in range(n))
    print(line)
""",
        ["4\n", "1\n", "5\n"],
    ),
]


def fail(pid: str, message: str) -> None:
    raise SystemExit(f"build_program_set: {pid}: {message}")


def run_stdin(pid: str, program: str, stdin: str) -> str:
    """The program's stdout on ``stdin``; the build fails on a non-zero exit, stderr output or empty stdout."""
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", program], input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        fail(pid, f"timed out after {TIMEOUT_S} s on stdin {stdin!r}")
    if proc.returncode != 0:
        fail(pid, f"exit status {proc.returncode} on stdin {stdin!r}: {proc.stderr.strip()}")
    if proc.stderr:
        fail(pid, f"wrote to stderr on stdin {stdin!r}: {proc.stderr.strip()}")
    if not proc.stdout.strip():
        fail(pid, f"printed nothing on stdin {stdin!r}")
    if len(proc.stdout) > MAX_OUTPUT_CHARS:
        fail(pid, f"output of {len(proc.stdout)} characters (> {MAX_OUTPUT_CHARS}) on stdin {stdin!r}")
    return proc.stdout


def run_call(pid: str, program: str, fn: str, args: list[Any], workdir: Path) -> Any:
    """``fn(*args)`` with the program loaded as a module (``__name__ == "__solution__"``), through JSON."""
    path = workdir / f"{pid}.py"
    path.write_text(program, encoding="utf-8")
    harness = (
        "import json, runpy, sys\n"
        f"ns = runpy.run_path({str(path)!r}, run_name='__solution__')\n"
        f"print(json.dumps(ns[{fn!r}](*json.loads(sys.stdin.read()))))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", harness],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        fail(pid, f"{fn}(*{args!r}) timed out after {TIMEOUT_S} s")
    if proc.returncode != 0 or proc.stderr:
        fail(pid, f"{fn}(*{args!r}) failed (exit {proc.returncode}): {proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()
    if len(lines) != 1:
        fail(pid, f"{fn}(*{args!r}) printed {len(lines)} lines, expected one JSON value")
    if len(lines[0]) > MAX_OUTPUT_CHARS:
        fail(pid, f"{fn}(*{args!r}) returned a value of {len(lines[0])} JSON characters (> {MAX_OUTPUT_CHARS})")
    return json.loads(lines[0])


def check_spec(pid: str, spec: Spec) -> None:
    """Static checks of one program before running it."""
    if not spec.prompt.strip():
        fail(pid, "empty prompt")
    try:
        tree = ast.parse(spec.program)
    except SyntaxError as err:
        fail(pid, f"program does not parse: {err}")
    n_lines = len(spec.program.strip().splitlines())
    if not 3 <= n_lines <= 25:
        fail(pid, f"program has {n_lines} lines, expected 3 to 25")
    if not 3 <= len(spec.stdins) <= 5:
        fail(pid, f"{len(spec.stdins)} stdin cases, expected 3 to 5")
    if len(set(spec.stdins)) != len(spec.stdins):
        fail(pid, "duplicate stdin cases")
    for stdin in spec.stdins:
        if not stdin.endswith("\n"):
            fail(pid, f"stdin {stdin!r} does not end with a newline")
    if spec.fn is None:
        if spec.calls:
            fail(pid, "function-call arguments without a function name")
        return
    if not 2 <= len(spec.calls) <= 3:
        fail(pid, f"{len(spec.calls)} function-call cases, expected 2 to 3")
    top_level = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if spec.fn not in top_level:
        fail(pid, f"no top-level function {spec.fn!r}")
    if f"`{spec.fn}(" not in spec.prompt:
        fail(pid, f"prompt does not state the interface of `{spec.fn}`")
    if 'if __name__ == "__main__":' not in spec.program:
        fail(pid, 'a program with a function must read stdin under `if __name__ == "__main__":`')


def build_rows() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="program_set_") as tmp:
        for number, spec in enumerate(SPECS, start=1):
            pid = f"prog-{number:03d}"
            check_spec(pid, spec)
            cases: list[dict[str, Any]] = [
                {"type": "stdin_stdout", "input": stdin, "output": run_stdin(pid, spec.program, stdin)}
                for stdin in spec.stdins
            ]
            for args in spec.calls:
                value = run_call(pid, spec.program, spec.fn, args, Path(tmp))
                cases.append({"type": "function_call", "fn_name": spec.fn, "input": args, "output": [value]})
            rows.append(
                {
                    "id": pid,
                    "prompt": spec.prompt,
                    "program": spec.program,
                    "inputs": spec.stdins[0],
                    "output": cases[0]["output"],
                    "test_cases": json.dumps({"test_cases": cases}, sort_keys=True, ensure_ascii=False),
                }
            )
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit("build_program_set: duplicate ids")
    for row in rows:
        if not json.loads(row["test_cases"])["test_cases"]:
            fail(row["id"], "no test cases")
    return rows


def main() -> None:
    rows = build_rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)
    OUT.write_text(text, encoding="utf-8", newline="\n")
    n_fn = sum(1 for spec in SPECS if spec.fn)
    print(f"wrote {len(rows)} programs ({n_fn} with function-call cases) to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
