OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _medians = summary.loc[['all-API', 'self-hosted'], 'median']\n"
                                               ">>> first_failure((lambda: hybrid_proportional is not ... and why_memo_differs is not ..., 'not done yet: set hybrid_proportional and "
                                               "why_memo_differs'), (lambda: _medians.min() <= hybrid_proportional <= _medians.max(), lambda: f'a mix of the two medians lies between them: got "
                                               "{hybrid_proportional!r}'), (lambda: abs(hybrid_proportional - (summary.attrs['paid_share'] * _medians['self-hosted'] + (1 - "
                                               "summary.attrs['paid_share']) * _medians['all-API'])) > 1e-06 * _medians.max() or _medians.min() == _medians.max(), 'the shares are the wrong way "
                                               "round: the paid share goes with the all-API median'), (lambda: isinstance(why_memo_differs, str) and len(why_memo_differs.split()) >= 5, "
                                               "'why_memo_differs: one sentence, in your words'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
