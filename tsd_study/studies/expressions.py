"""Arithmetic over table cells, as the study definitions write it: ``tsd_pc.AP75 - tsd_joint.AP75``.

Expressions are parsed with Python's ``ast`` and evaluated by a whitelist (numbers, + - * /, unary minus, ``mean(...)``,
``row.metric`` references, or bare ``metric`` names inside a row's derived metrics); nothing is ever ``eval``-ed.
Values may be numpy arrays (one entry per seed), so a check is evaluated seed by seed.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

Value = float | np.ndarray
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
COMPARISONS = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}


class ExpressionError(ValueError):
    """An expression uses something outside the whitelist or refers to an unknown row."""


@dataclass(frozen=True)
class Expression:
    """A parsed expression; ``refs`` are the (row, metric) cells it reads (row is '' for bare metric names)."""

    source: str
    tree: ast.expr
    refs: frozenset[tuple[str, str]]

    @classmethod
    def parse(cls, source: str, *, bare_metrics: bool = False) -> Expression:
        try:
            tree = ast.parse(source, mode="eval").body
        except SyntaxError as error:
            raise ExpressionError(f"{source!r}: not an expression ({error.msg})") from None
        refs: set[tuple[str, str]] = set()
        _collect(tree, source, bare_metrics, refs)
        return cls(source, tree, frozenset(refs))

    @property
    def rows(self) -> frozenset[str]:
        return frozenset(row for row, _ in self.refs if row)

    def evaluate(self, cell: Callable[[str, str], Value]) -> Value:
        """The value, reading each ``row.metric`` (or bare ``metric``, row '') through ``cell``."""
        return _evaluate(self.tree, cell)


@dataclass(frozen=True)
class Check:
    """``lhs OP rhs``; its margin is how far the inequality holds (positive) or fails (negative)."""

    source: str
    lhs: Expression
    op: str
    rhs: Expression

    @classmethod
    def parse(cls, source: str) -> Check:
        try:
            tree = ast.parse(source, mode="eval").body
        except SyntaxError:
            tree = None
        if not isinstance(tree, ast.Compare) or len(tree.ops) != 1 or type(tree.ops[0]) not in COMPARISONS:
            raise ExpressionError(f"{source!r}: a check is one comparison (>, >=, <, <=) of two expressions")
        left = ast.get_source_segment(source, tree.left)
        right = ast.get_source_segment(source, tree.comparators[0])
        return cls(source, Expression.parse(left), COMPARISONS[type(tree.ops[0])], Expression.parse(right))

    @property
    def rows(self) -> frozenset[str]:
        return self.lhs.rows | self.rhs.rows

    def margin(self, cell: Callable[[str, str], Value]) -> Value:
        """lhs - rhs for > and >=, rhs - lhs for < and <=."""
        difference = self.lhs.evaluate(cell) - self.rhs.evaluate(cell)
        return difference if self.op in (">", ">=") else -difference


def _collect(node: ast.AST, source: str, bare_metrics: bool, refs: set[tuple[str, str]]) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        refs.add((node.value.id, node.attr))
        return
    if isinstance(node, ast.Name) and bare_metrics:
        refs.add(("", node.id))
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _collect(node.left, source, bare_metrics, refs)
        _collect(node.right, source, bare_metrics, refs)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _collect(node.operand, source, bare_metrics, refs)
        return
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "mean" and node.args
            and not node.keywords):
        for argument in node.args:
            _collect(argument, source, bare_metrics, refs)
        return
    expected = "metric names" if bare_metrics else "row.metric references"
    raise ExpressionError(f"{source!r}: {ast.unparse(node)!r} is not allowed (numbers, {expected}, + - * /, mean())")


def _evaluate(node: ast.expr, cell: Callable[[str, str], Value]) -> Value:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Attribute):
        return cell(node.value.id, node.attr)
    if isinstance(node, ast.Name):
        return cell("", node.id)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, cell), _evaluate(node.right, cell))
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, cell)
    values = [_evaluate(argument, cell) for argument in node.args]
    return sum(values) / len(values)
