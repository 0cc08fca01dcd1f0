"""The price comparison in the create dialog: the chosen size's class at every account.

Rows come from ``app.services.compare.compare_sizes``; clicking one switches the dialog's form
to that account, region and size.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.services.compare import Offer, SizeClass
from app.ui import formatting

__all__ = ["PriceComparison"]


class PriceComparison(QGroupBox):
    """The chosen size's class (cores, memory, architecture) at every configured account.

    One row per account: its cheapest size of the class, where, and what it costs, cheapest
    first. Prices stay in each provider's currency (no exchange rates are known), so offers in
    another currency than the first come after it, ordered by their own amount.

    Signals:
        picked(account, region, size): the user clicked a row (the form switches to it).
    Attributes:
        table: the offers; busy: shown while sizes load; note: what the rows mean, or why an
            account is missing; offers: the rows shown, in order.
    """

    picked = Signal(str, str, str)

    HEADERS = ("Account", "Size", "Region", "Per hour", "Per month", "VAT")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Compare your accounts", parent)
        self.offers: list[Offer] = []
        # No word wrap in here: wrapped labels (height for width) made the dialog's layout
        # squeeze the table under the note.
        self.heading = QLabel()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(90)
        self.busy.setTextVisible(False)
        self.busy.setToolTip("Loading the other accounts' live prices…")
        self.busy.hide()
        top = QHBoxLayout()
        top.addWidget(self.heading, 1)
        top.addWidget(self.busy)
        self.table = QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(list(self.HEADERS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setToolTip("Click a row to create the workspace there")
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(self.HEADERS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellClicked.connect(self._clicked)
        self.table.cellActivated.connect(self._clicked)
        self.note = QLabel()
        self.note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        self._fit()

    def set_loading(self, loading: bool) -> None:
        self.busy.setVisible(loading)

    def show_offers(
        self,
        size_class: SizeClass | None,
        architecture: str,
        offers: Sequence[Offer],
        labels: dict[str, str],
        current: tuple[str, str, str],
        missing: Sequence[str] = (),
    ) -> None:
        """Show ``offers`` (from ``compare_sizes``); ``current`` (account, region, size) is
        bold; ``missing`` are sentences about accounts that could not be compared."""
        self.offers = list(offers)
        if size_class is None:
            self.heading.setText("Choose a size to compare it across your accounts.")
        else:
            self.heading.setText(
                f"{size_class.label()} ({architecture}), cheapest per account; "
                "click a row to use it"
            )
        self.table.setRowCount(len(self.offers))
        for row, offer in enumerate(self.offers):
            price = offer.price
            chosen = (offer.account, offer.region, offer.size.name) == current
            cells = (
                labels.get(offer.account, offer.account),
                offer.size.name,
                offer.region,
                formatting.hourly(price.hourly, price.currency),
                formatting.money(price.monthly, price.currency),
                "incl." if price.includes_vat else "excl.",
            )
            tip = (
                f"{offer.size.name}: {offer.size.cores} vCPU, {offer.size.memory_gb:g} GB RAM, "
                f"{offer.size.disk_gb} GB disk, {offer.size.cpu_type} CPU, in {offer.region}"
                + ("  (the current choice)" if chosen else "  — click to use it")
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if column >= 3:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if chosen:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        notes = []
        currencies = sorted({o.price.currency for o in self.offers})
        if len(currencies) > 1:
            first = self.offers[0].price.currency
            notes.append(
                f"{' and '.join(currencies)} prices are not converted: {first} offers come first."
            )
        if size_class is not None and len(self.offers) < len(labels):
            have = {o.account for o in self.offers}
            for account in labels:
                if account not in have and not any(m.startswith(labels[account]) for m in missing):
                    notes.append(f"{labels[account]}: no {size_class.label()} size.")
        notes.extend(missing)
        self.note.setText("\n".join(notes))
        self.note.setVisible(bool(notes))
        self._fit()

    def _fit(self) -> None:
        # As tall as its rows, no scrolling: a few accounts must neither leave a large empty
        # table nor hide a row behind the note below it. Fixed heights from the font, because
        # Qt's own row and header sizes are not final before the table is shown.
        line = self.table.fontMetrics().height() + 10
        self.table.verticalHeader().setDefaultSectionSize(line)
        self.table.horizontalHeader().setFixedHeight(line)
        rows = max(1, self.table.rowCount())
        self.table.setFixedHeight(line * (rows + 1) + 2 * self.table.frameWidth())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._fit()  # row heights are final once the style is applied

    def _clicked(self, row: int, _column: int = 0) -> None:
        if 0 <= row < len(self.offers):
            offer = self.offers[row]
            self.picked.emit(offer.account, offer.region, offer.size.name)
