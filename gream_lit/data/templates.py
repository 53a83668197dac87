"""Instruction templates of the alignment tasks (docs/gream_spec.md §5.1), in our own wording.

Placeholders: ``{history}`` (items joined by ", "), ``{item}`` (a semantic ID), ``{title}``,
``{description}``, ``{preference}`` (a teacher-written user preference), ``{query}`` (a teacher-written
intention). Each template is ``(output kind, text)``; the kind says what the answer is.
``DIRECT_EVAL_TEMPLATE`` is the seq-rec prompt used by direct-mode evaluation.
"""

from __future__ import annotations

SEQREC = [
    ("item", "The user has interacted with these items in order: {history}. Which item will the user choose next?"),
    ("item", "Interaction history of a user, oldest first: {history}. Predict the next item."),
    ("item", "Given that a user bought {history}, recommend the item they are most likely to buy next."),
    ("item", "Here is what a customer purchased so far: {history}. What should we recommend to them now?"),
    ("item", "Items viewed by the user, in chronological order: {history}. Name the next item for this user."),
    ("item", "Based on the purchase sequence {history}, which item comes next?"),
]
DIRECT_EVAL_TEMPLATE = SEQREC[0][1]

ITEM2INDEX = [
    ("title", 'Which item is titled "{title}"?'),
    ("title", 'Give the identifier of the product called "{title}".'),
    ("title", 'What is the ID of the item named "{title}"?'),
    ("description", "Which item matches this description: {description}"),
    ("description", "Find the identifier of the product described as follows: {description}"),
    ("description", "An item is described like this: {description} What is its ID?"),
    ("both", 'Which item has the title "{title}" and the description: {description}'),
    ("both", 'Give the ID of the product "{title}", described as: {description}'),
    ("both", "Title: {title}\nDescription: {description}\nWhat is the item's identifier?"),
]

INDEX2ITEM = [
    ("title", "What is the title of item {item}?"),
    ("title", "Give the name of the product with ID {item}."),
    ("title", "Which product does {item} stand for? Answer with its title."),
    ("description", "Describe item {item}."),
    ("description", "What does the product {item} look like? Give its description."),
    ("description", "Write the description of the item identified by {item}."),
    ("both", "Give the title and description of item {item}."),
    ("both", "What are the name and the details of product {item}?"),
    ("both", "Tell me the title of {item}, then describe it."),
]

FUSIONSEQREC = [
    ("title", "The user interacted with {history} in this order. What is the title of the next item they will choose?"),
    ("title", "Given the purchase history {history}, name the title of the product the user will buy next."),
    ("title", "A customer bought {history}. Predict the title of their next purchase."),
    ("description", "The user interacted with {history} in this order. Describe the item they will choose next."),
    ("description", "Given the purchase history {history}, describe the product the user will buy next."),
    ("description", "A customer bought {history}. What does their next purchase look like?"),
    ("item_from_titles", "The user bought these products in order: {history}. Which item should be recommended next?"),
    ("item_from_titles", "Titles of a user's items, oldest first: {history}. Give the ID of the next item."),
    ("item_from_titles", "A shopper's history by title: {history}. Recommend the next item by its identifier."),
]

ITEMSEARCH = [
    ("item", "A user with the history {history} says: {preference} Which item fits this user best?"),
    ("item", "The user bought {history} and is now looking for this: {query} Which item answers the request?"),
    ("item", 'A user who says "{preference}" searches for "{query}" after buying {history}. Which item fits?'),
    ("item", 'Act as a search engine. Query: "{query}". User history: {history}. Pick the item to return.'),
    ("item", 'Act as a search engine. A user searches for "{query}". Which item matches the query?'),
    ("item", 'Find the item a customer means by: "{query}"'),
]

PREFERENCEOBTAIN = [
    ("preference", "Summarise the preferences of a user who interacted with {history}."),
    ("preference", "From the purchase history {history}, what does this user like?"),
    ("preference", "A customer bought {history}. Describe their tastes in a few sentences."),
    ("preference", "What kind of products does a user prefer if their history is {history}?"),
]
