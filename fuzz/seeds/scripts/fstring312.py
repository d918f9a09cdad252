# Python 3.12 f-strings: nested quotes, comments, backslashes
import math
items = ["a", "b"]
print(f"{", ".join(items)}")
print(f"{f"{f"{math.pi:.{2}f}"}"}")
print(f"{'\n'.join(items)}")
x = f"""{
    items[0]  # a comment
}"""
type Point = tuple[float, float]
def first[T](xs: list[T]) -> T: return xs[0]
