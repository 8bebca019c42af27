"""Checkers for the exercises at the end of each chapter.

Each chapter has a module (``lightm_edu.exercises.ch01``, ...) whose functions take the learner's
answer (a value or a function), compare it with the package's own implementation, and return a
:class:`Feedback`: truthy when correct, with a message that says what is wrong and how to look for
the mistake (wrong shape, wrong values at which position, an exception, or "not attempted yet").
A checker never raises on a wrong answer, so a notebook keeps running.

    from lightm_edu.exercises import ch01
    ch01.check_zoh(my_discretize_zoh)     # shows the feedback in a notebook; bool() says if it passed
"""

from ._checking import Feedback, call_learner, compare_tensors, not_attempted

__all__ = ["Feedback", "call_learner", "compare_tensors", "not_attempted"]
